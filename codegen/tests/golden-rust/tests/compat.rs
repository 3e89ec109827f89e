//! Cross-language byte compatibility of the generated TypeScript codecs with prost, for the
//! every-feature protos (`codegen/tests/protos/every/v1/*.proto`):
//!
//! 1. Rust -> TS: random messages (built with prost-reflect from the descriptors, then
//!    decoded and re-encoded by the *generated prost types*, so the bytes are prost's) are
//!    written to a fixture with their expected values; `golden-ts/test/compat.mjs` decodes
//!    each with the generated TS codec, compares the value and re-encodes to identical bytes.
//! 2. TS -> Rust: the same script writes random messages encoded by the TS codecs; here the
//!    generated prost types decode them to equal values and re-encode to identical bytes.
//!
//! Run: `cargo test -p kafkasocks-golden-rust --test compat` (needs Node; runs `npm ci` in
//! `ts-templates/` when its `node_modules` is missing, and `tsc -p codegen/tests/golden-ts`,
//! which also checks the golden TS with `--strict`). The same binary runs golden-ts's
//! `test/*.test.mjs` (what `npm test` there runs). Set
//! `KAFKASOCKS_COMPAT_COUNT` for more messages (default 1000 per direction and type).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kafkasocks_golden_rust::{every, legacy};
use prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn pool() -> DescriptorPool {
    let protos = repo().join("codegen/tests/protos");
    let mut c = protox::Compiler::new([protos.clone(), repo().join("proto")]).unwrap();
    c.include_imports(true);
    c.open_file(protos.join("every/v1/every.proto")).unwrap();
    c.descriptor_pool()
}

/// protoc's lowerCamelCase (what the TS generator names properties).
fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    let mut chars = out.chars();
    chars.next().map(|f| f.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

// --- Random messages --------------------------------------------------------------------

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn string(&mut self) -> String {
        let parts = ["", "a", "room-1", "é", "中文", "😀", "\u{0}", "\"quote\"", "x y z", "\u{ffff}"];
        (0..self.rng.random_range(0..4)).map(|_| self.pick(&parts)).collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        (0..self.rng.random_range(0..12)).map(|_| self.rng.random()).collect()
    }

    fn f32(&mut self) -> f32 {
        match self.rng.random_range(0..8) {
            0 => self.pick(&[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE / 4.0]),
            1 => self.pick(&[1.0, -1.0, 0.5, 16_777_216.0, f32::MAX, f32::MIN]),
            _ => f32::from_bits(self.rng.random::<u32>() & 0x7f7f_ffff) * self.pick(&[1.0, -1.0]),
        }
    }

    fn f64(&mut self) -> f64 {
        match self.rng.random_range(0..8) {
            0 => self.pick(&[0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 5e-324]),
            1 => self.pick(&[1.0, -1.0, 0.1, 9_007_199_254_740_993.0, f64::MAX, 1e300]),
            _ => {
                let v = f64::from_bits(self.rng.random::<u64>());
                if v.is_nan() { 0.25 } else { v }
            }
        }
    }

    fn i64(&mut self) -> i64 {
        match self.rng.random_range(0..4) {
            0 => self.pick(&[0, 1, -1, i64::MAX, i64::MIN, 1 << 53, -(1 << 53) - 1]),
            1 => self.rng.random_range(-1000..1000),
            _ => self.rng.random(),
        }
    }

    fn i32(&mut self) -> i32 {
        match self.rng.random_range(0..3) {
            0 => self.pick(&[0, 1, -1, i32::MAX, i32::MIN]),
            1 => self.rng.random_range(-300..300),
            _ => self.rng.random(),
        }
    }

    fn scalar(&mut self, kind: &Kind, closed_enum: bool) -> Value {
        match kind {
            Kind::Double => Value::F64(self.f64()),
            Kind::Float => Value::F32(self.f32()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(self.i32()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.i64()),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.i32() as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.i64() as u64),
            Kind::Bool => Value::Bool(self.rng.random()),
            Kind::String => Value::String(self.string()),
            Kind::Bytes => Value::Bytes(self.bytes().into()),
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                if !closed_enum && self.rng.random_bool(0.2) {
                    Value::EnumNumber(self.pick(&[7, 99, -100, i32::MAX]))
                } else {
                    Value::EnumNumber(self.pick(&known))
                }
            }
            Kind::Message(_) => unreachable!(),
        }
    }

    fn map_key(&mut self, kind: &Kind) -> MapKey {
        match self.scalar(kind, true) {
            Value::Bool(b) => MapKey::Bool(b),
            Value::I32(v) => MapKey::I32(v),
            Value::I64(v) => MapKey::I64(v),
            Value::U32(v) => MapKey::U32(v),
            Value::U64(v) => MapKey::U64(v),
            Value::String(v) => MapKey::String(v),
            _ => unreachable!(),
        }
    }

    fn value(&mut self, f: &FieldDescriptor, kind: &Kind, depth: u32) -> Option<Value> {
        match kind {
            Kind::Message(m) => (depth < 3).then(|| Value::Message(self.message(m, depth + 1))),
            k => Some(self.scalar(k, f.parent_file().syntax() == prost_reflect::Syntax::Proto2)),
        }
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: u32) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        let mut oneof_done = Vec::new();
        for f in desc.fields() {
            if let Some(o) = f.containing_oneof().filter(|o| !o.is_synthetic()) {
                if oneof_done.contains(&o.name().to_owned()) || self.rng.random_bool(0.6) {
                    continue;
                }
                if let Some(v) = self.value(&f, &f.kind(), depth) {
                    m.set_field(&f, v);
                    oneof_done.push(o.name().to_owned());
                }
                continue;
            }
            if f.is_map() {
                let Kind::Message(entry) = f.kind() else { unreachable!() };
                let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                let mut map = std::collections::HashMap::new();
                for _ in 0..self.rng.random_range(0..4) {
                    let key = self.map_key(&kf.kind());
                    if let Some(v) = self.value(&vf, &vf.kind(), depth) {
                        map.insert(key, v);
                    }
                }
                m.set_field(&f, Value::Map(map));
            } else if f.is_list() {
                let items: Vec<Value> =
                    (0..self.rng.random_range(0..4)).filter_map(|_| self.value(&f, &f.kind(), depth)).collect();
                m.set_field(&f, Value::List(items));
            } else if (f.cardinality() == Cardinality::Required || self.rng.random_bool(0.7))
                && let Some(v) = self.value(&f, &f.kind(), depth)
            {
                m.set_field(&f, v);
            }
        }
        m
    }
}

// --- Canonical JSON (the TS side computes the same from its values) ---------------------

fn num(x: f64) -> Json {
    if x.is_nan() {
        json!("NaN")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "Infinity" } else { "-Infinity" })
    } else if x == 0.0 && x.is_sign_negative() {
        json!("-0")
    } else if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_992.0 {
        json!(x as i64)
    } else {
        json!(format!("f64:{:016x}", x.to_bits()))
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I32(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I64(x) => json!(x.to_string()),
        Value::U64(x) => json!(x.to_string()),
        Value::F32(x) => num(f64::from(*x)),
        Value::F64(x) => num(*x),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(hex(b)),
        Value::EnumNumber(n) => json!(n),
        Value::Message(m) => message_json(m),
        Value::List(items) => Json::Array(items.iter().map(value_json).collect()),
        Value::Map(map) => {
            let entries: Vec<Json> = map
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        MapKey::Bool(b) => json!(b),
                        MapKey::I32(x) => json!(x),
                        MapKey::U32(x) => json!(x),
                        MapKey::I64(x) => json!(x.to_string()),
                        MapKey::U64(x) => json!(x.to_string()),
                        MapKey::String(s) => json!(s),
                    };
                    json!([k, value_json(v)])
                })
                .collect();
            json!({ "$map": entries })
        }
    }
}

fn message_json(m: &DynamicMessage) -> Json {
    let mut obj = serde_json::Map::new();
    for f in m.descriptor().fields() {
        let present = m.has_field(&f);
        if let Some(o) = f.containing_oneof().filter(|o| !o.is_synthetic()) {
            if present {
                obj.insert(camel(o.name()), json!({ "case": camel(f.name()), "value": value_json(&m.get_field(&f)) }));
            }
            continue;
        }
        let always = f.is_list() || f.is_map() || !f.supports_presence() || f.cardinality() == Cardinality::Required;
        if present || always {
            obj.insert(camel(f.name()), value_json(&m.get_field(&f)));
        }
    }
    Json::Object(obj)
}

/// Sorts `$map` entries so map order does not matter.
fn normalize(v: &Json) -> Json {
    match v {
        Json::Object(o) => {
            if let Some(Json::Array(entries)) = o.get("$map") {
                let mut e: Vec<Json> = entries.iter().map(normalize).collect();
                e.sort_by_key(|x| x.to_string());
                return json!({ "$map": e });
            }
            Json::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        Json::Array(a) => Json::Array(a.iter().map(normalize).collect()),
        x => x.clone(),
    }
}

// --- The fixture schema the TS generator reads ------------------------------------------

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(_) => "message".into(),
        Kind::Enum(_) => "enum".into(),
        k => format!("{k:?}").to_lowercase(),
    }
}

fn type_name(k: &Kind) -> Json {
    match k {
        Kind::Message(m) => json!(m.full_name()),
        Kind::Enum(e) => json!(e.full_name()),
        _ => Json::Null,
    }
}

fn schema(pool: &DescriptorPool) -> Json {
    let mut messages = serde_json::Map::new();
    for m in pool.all_messages().filter(|m| !m.is_map_entry()) {
        let fields: Vec<Json> = m
            .fields()
            .map(|f| {
                let label = if f.is_map() {
                    "map"
                } else if f.is_list() {
                    "repeated"
                } else if f.cardinality() == Cardinality::Required {
                    "required"
                } else if f.supports_presence() {
                    "optional"
                } else {
                    "implicit"
                };
                let (kind, key) = match (f.is_map(), f.kind()) {
                    (true, Kind::Message(entry)) => {
                        (entry.map_entry_value_field().kind(), Some(kind_name(&entry.map_entry_key_field().kind())))
                    }
                    (_, k) => (k, None),
                };
                json!({
                    "prop": camel(f.name()),
                    "label": label,
                    "kind": kind_name(&kind),
                    "type": type_name(&kind),
                    "key": key,
                    "oneof": f.containing_oneof().filter(|o| !o.is_synthetic()).map(|o| camel(o.name())),
                })
            })
            .collect();
        messages.insert(m.full_name().to_owned(), json!({ "fields": fields }));
    }
    let mut enums = serde_json::Map::new();
    for e in pool.all_enums() {
        let closed = e.parent_file().syntax() == prost_reflect::Syntax::Proto2;
        enums.insert(
            e.full_name().to_owned(),
            json!({ "values": e.values().map(|v| v.number()).collect::<Vec<_>>(), "closed": closed }),
        );
    }
    json!({ "messages": messages, "enums": enums })
}

// --- The tests -----------------------------------------------------------------------------

/// Compiles `codegen/tests/golden-ts` (the golden TS with `tsc --strict`, plus
/// `typed/usage.ts`) into its `dist/`, once per test run; returns the folder. Installs
/// ts-templates' dev dependencies (`npm ci`) when they are missing.
fn build_golden_ts() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let ts_dir = repo().join("codegen/tests/golden-ts");
    BUILT.get_or_init(|| {
        let npm = |args: &[&str], dir: &Path| {
            let status = Command::new("npm")
                .args(args)
                .current_dir(dir)
                .status()
                .unwrap_or_else(|e| panic!("running npm {args:?} in {} (needs Node and npm): {e}", dir.display()));
            assert!(status.success(), "npm {args:?} in {} failed", dir.display());
        };
        // The golden TS imports @kafkasocks/runtime (a file: dependency on ts-templates),
        // whose types are its built dist/: install what is missing, and rebuild the runtime
        // so that dist/ matches its sources.
        let runtime = repo().join("ts-templates");
        if runtime.join("node_modules").exists() {
            npm(&["run", "build"], &runtime);
        } else {
            npm(&["ci", "--no-audit", "--no-fund"], &runtime);
        }
        if !ts_dir.join("node_modules/@kafkasocks/runtime").exists() {
            npm(&["ci", "--no-audit", "--no-fund"], &ts_dir);
        }
        let tsc = runtime.join("node_modules/.bin/tsc");
        let status = Command::new(&tsc).arg("-p").arg(&ts_dir).status().expect("running tsc");
        assert!(status.success(), "tsc -p codegen/tests/golden-ts failed: the golden TS does not compile");
    });
    ts_dir
}

/// `npm test` of golden-ts, from cargo: the codec behaviour tests in `test/*.test.mjs`.
#[test]
fn generated_typescript_codec_tests_pass() {
    let ts_dir = build_golden_ts();
    let mut tests: Vec<PathBuf> = std::fs::read_dir(ts_dir.join("test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    tests.sort();
    let out = Command::new("node").arg("--test").args(&tests).output().expect("running node --test");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "node --test failed:\n{log}");
}

/// prost's re-encoding of bytes through the generated type of `type_name`.
fn prost_roundtrip(type_name: &str, bytes: &[u8]) -> Vec<u8> {
    match type_name {
        "every.v1.Everything" => every::v1::Everything::decode(bytes).unwrap().encode_to_vec(),
        "legacy.v1.Legacy" => legacy::v1::Legacy::decode(bytes).unwrap().encode_to_vec(),
        t => panic!("no prost type for {t}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn prost_and_generated_typescript_agree_byte_for_byte() {
    let count: usize = std::env::var("KAFKASOCKS_COMPAT_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let pool = pool();
    let ts_dir = build_golden_ts();

    let dir = std::env::temp_dir().join(format!("kafkasocks-compat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schema.json"), schema(&pool).to_string()).unwrap();

    // Rust -> TS.
    let seed: u64 = std::env::var("KAFKASOCKS_COMPAT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20_240_917);
    let mut g = Gen { rng: StdRng::seed_from_u64(seed) };
    let mut lines = String::new();
    let mut written = BTreeMap::new();
    for type_name in ["every.v1.Everything", "legacy.v1.Legacy"] {
        let desc = pool.get_message_by_name(type_name).unwrap();
        for _ in 0..count {
            let dynamic = g.message(&desc, 0);
            let bytes = prost_roundtrip(type_name, &dynamic.encode_to_vec());
            // prost's bytes are stable under prost.
            assert_eq!(prost_roundtrip(type_name, &bytes), bytes);
            let value = message_json(&DynamicMessage::decode(desc.clone(), &bytes[..]).unwrap());
            lines.push_str(&json!({ "type": type_name, "hex": hex(&bytes)[2..], "value": value }).to_string());
            lines.push('\n');
            *written.entry(type_name).or_insert(0) += 1;
        }
    }
    std::fs::write(dir.join("rust-to-ts.jsonl"), lines).unwrap();

    let out = Command::new("node")
        .arg(ts_dir.join("test/compat.mjs"))
        .arg(&dir)
        .arg(count.to_string())
        .output()
        .expect("running node");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "compat.mjs failed:\n{log}");
    eprintln!("{log}");

    // TS -> Rust.
    let text = std::fs::read_to_string(dir.join("ts-to-rust.jsonl")).unwrap();
    let mut checked = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let entry: Json = serde_json::from_str(line).unwrap();
        let type_name = entry["type"].as_str().unwrap();
        let bytes = unhex(entry["hex"].as_str().unwrap());
        let again = prost_roundtrip(type_name, &bytes);
        assert_eq!(hex(&again), hex(&bytes), "line {i}: prost re-encodes TS bytes differently ({type_name})");
        let desc = pool.get_message_by_name(type_name).unwrap();
        let value = message_json(&DynamicMessage::decode(desc, &again[..]).unwrap());
        assert_eq!(normalize(&value), normalize(&entry["value"]), "line {i}: values differ ({type_name})");
        *checked.entry(type_name.to_owned()).or_insert(0) += 1;
    }
    eprintln!("rust -> ts: {written:?}; ts -> rust: {checked:?}");
    for t in ["every.v1.Everything", "legacy.v1.Legacy"] {
        assert_eq!(checked.get(t).copied().unwrap_or(0), count, "{t}: TS wrote as many messages as asked");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
