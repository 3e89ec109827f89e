/**
 * The test page's script (bundled by esbuild with the runtime, the @kafkasocks/runtime package of ../../ts-templates):
 * exposes `window.ksHarness.run(name, { url, topic }, params)`, which runs a scenario from
 * scenarios.ts with the browser's own WebSocket. The `Control` calls go back to the Node test
 * process through functions Playwright exposes on the page (`ksControl_<method>`).
 */
import { RUNTIME_VERSION } from "@kafkasocks/runtime";
import { CONTROL_METHODS, runScenario, type Control, type ScenarioName } from "./scenarios.ts";

type Bindings = { [K in (typeof CONTROL_METHODS)[number] as `ksControl_${K}`]: Control[K] };

function control(): Control {
  const w = window as unknown as Partial<Bindings>;
  const out: Partial<Record<keyof Control, unknown>> = {};
  for (const m of CONTROL_METHODS) {
    out[m] = (...args: unknown[]) => {
      const fn = w[`ksControl_${m}`] as ((...a: unknown[]) => Promise<unknown>) | undefined;
      if (!fn) return Promise.reject(new Error(`the test did not expose ksControl_${m}`));
      return fn(...args);
    };
  }
  return out as Control;
}

const harness = {
  runtimeVersion: RUNTIME_VERSION,
  run(name: ScenarioName, base: { url: string; topic: string }, params: unknown): Promise<unknown> {
    return runScenario(name, { ...base, control: control() }, params as never);
  },
};

(window as unknown as { ksHarness: typeof harness }).ksHarness = harness;
