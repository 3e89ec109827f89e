#!/usr/bin/env bash
# The runner starts a program without arguments: this one runs testee.mjs on the
# generated code that run.sh compiled.
exec node "$(dirname "${BASH_SOURCE[0]}")/testee.mjs" "${CONFORMANCE_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/target/conformance}/gen/dist"
