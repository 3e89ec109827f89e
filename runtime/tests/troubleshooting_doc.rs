//! docs/troubleshooting.md lists everything a client can be told: every status code of the
//! wire protocol, every WebSocket close code the gateway sends, every `Discontinuity`, and
//! every error the TypeScript client reports itself. A code added without a row in the
//! document's tables fails here, naming it.

use std::path::Path;

/// Close codes the gateway sends that are not constants of `src/protocol/close.rs`: 1000,
/// the normal close of a session that ended (`Session::teardown` in
/// `src/session/connection.rs`).
const OTHER_CLOSE_CODES: &[u16] = &[1000];

/// A file of the repository, by its path from the repository's root.
fn repository_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The table rows of the Markdown sections whose heading (of any level) contains
/// `heading`, up to the next heading: each row as its cells, trimmed, without the backticks
/// and bold marks around them. Fenced code blocks are skipped.
fn table_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_section = false;
    let mut in_fence = false;
    for line in doc.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if line.starts_with('#') {
            in_section = line.trim_start_matches('#').contains(heading);
            continue;
        }
        if in_section && line.starts_with('|') {
            let cells = line
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('*').trim_matches('`').trim().to_owned())
                .collect();
            rows.push(cells);
        }
    }
    rows
}

/// Whether some row's first cell is `first` and, when given, its second cell is `second`.
fn has_row(rows: &[Vec<String>], first: &str, second: Option<&str>) -> bool {
    rows.iter().any(|cells| {
        cells.first().is_some_and(|c| c == first) && second.is_none_or(|s| cells.get(1).is_some_and(|c| c == s))
    })
}

/// `NAME = N` of every `const NAME: u16 = N;` line of close.rs.
fn close_constants(source: &str) -> Vec<(String, u16)> {
    source
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("const ")?;
            let (name, rest) = rest.split_once(": u16 =")?;
            let number = rest.trim().trim_end_matches(';').trim();
            let number = number.parse::<u16>().unwrap_or_else(|e| panic!("close.rs: {name} = {number:?}: {e}"));
            Some((name.trim().to_owned(), number))
        })
        .collect()
}

/// The string literals of the `ClientCode` union type of errors.ts.
fn client_codes(source: &str) -> Vec<String> {
    let start =
        source.find("export type ClientCode").unwrap_or_else(|| panic!("errors.ts: no `export type ClientCode`"));
    let declaration = &source[start..];
    let end = declaration.find(';').unwrap_or_else(|| panic!("errors.ts: `export type ClientCode` has no `;`"));
    declaration[..end].split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn troubleshooting_doc_lists_every_code() {
    let doc = repository_file("docs/troubleshooting.md");
    let mut missing = Vec::new();

    // Status codes: the proto enum (OK included) and the runtime's table, number and name.
    let codes = table_rows(&doc, "Error codes");
    let mut proto_codes = 0;
    for number in 0..=64i32 {
        let Ok(code) = kafkasocks::wire::Code::try_from(number) else { continue };
        proto_codes += 1;
        let name = code.as_str_name();
        if !has_row(&codes, &number.to_string(), Some(name)) {
            missing.push(format!(
                "status code {number} {name}: no row `| {number} | `{name}` | …` under \"## Error codes\""
            ));
        }
    }
    assert!(proto_codes >= 17, "frame.proto's Code enum should have OK and 16 codes, found {proto_codes}");
    for &code in kafkasocks::Code::ALL {
        let (number, name) = (code.grpc(), code.as_str());
        if !has_row(&codes, &number.to_string(), Some(name)) {
            missing.push(format!("status code {number} {name} (kafkasocks::Code): no row under \"## Error codes\""));
        }
    }

    // Close codes: the constants of close.rs, and the ones sent outside it.
    let closes = table_rows(&doc, "Close codes");
    let constants = close_constants(&repository_file("runtime/src/protocol/close.rs"));
    assert!(
        constants.len() >= 10,
        "runtime/src/protocol/close.rs should declare `const NAME: u16 = N;` lines, found {constants:?}"
    );
    let others = OTHER_CLOSE_CODES.iter().map(|&n| ("sent by Session::teardown".to_owned(), n));
    for (name, number) in constants.into_iter().chain(others) {
        if !has_row(&closes, &number.to_string(), None) {
            missing.push(format!("close code {number} ({name}): no row `| {number} | …` under \"## Close codes\""));
        }
    }

    // Why a cursor cannot be honoured (0, "none", excepted).
    let discontinuities = table_rows(&doc, "DATA_LOSS");
    for number in 1..=64i32 {
        let Ok(d) = kafkasocks::wire::Discontinuity::try_from(number) else { continue };
        let name = d.as_str_name();
        if !has_row(&discontinuities, name, None) {
            missing.push(format!("discontinuity {number} {name}: no row `| `{name}` | …` under the DATA_LOSS heading"));
        }
    }

    // What the TypeScript client reports by itself.
    let ts = table_rows(&doc, "TypeScript client reports itself");
    let client = client_codes(&repository_file("ts-templates/src/errors.ts"));
    assert!(!client.is_empty(), "ts-templates/src/errors.ts: no string in `export type ClientCode`");
    for name in client {
        if !has_row(&ts, &name, None) {
            missing.push(format!(
                "TypeScript clientCode {name}: no row `| `{name}` | …` under \"### Errors the TypeScript client reports itself\""
            ));
        }
    }

    assert!(missing.is_empty(), "docs/troubleshooting.md does not document:\n{}", missing.join("\n"));
}
