//! The operator documentation checked against the code: `docs/CONFIG.md` and
//! `docs/filestore.example.toml` against `filestore::config::Config` (every option
//! documented with its type, default and environment variable, no stale keys), and
//! `docs/OPERATIONS.md` against the metric names `src/metrics.rs` and `src/http/ops.rs`
//! render.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use filestore::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every leaf of `table` as `section.key` (or `key` at the top level) with its value.
fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(t, &name, out),
            other => {
                out.insert(name, other.clone());
            }
        }
    }
}

/// The options of `Config::default()`, flattened.
fn defaults() -> BTreeMap<String, toml::Value> {
    let table = toml::Table::try_from(Config::default()).expect("the default config serialises");
    let mut out = BTreeMap::new();
    flatten(&table, "", &mut out);
    assert!(out.len() > 20, "suspiciously few options: {out:?}");
    out
}

/// The environment variable that sets an option.
fn env_var(key: &str) -> String {
    match key.split_once('.') {
        Some((section, k)) => format!("FILESTORE_{}__{}", section.to_uppercase(), k.to_uppercase()),
        // The only top-level option, `data_dir`, is set through the `--data-dir` flag's variable.
        None => format!("FILESTORE_{}", key.to_uppercase()),
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Boolean(_) => "bool",
        toml::Value::Float(_) => "float",
        toml::Value::Datetime(_) => "datetime",
        toml::Value::Array(_) => "array",
        toml::Value::Table(_) => "table",
    }
}

/// One row of an option table in CONFIG.md.
#[derive(Debug)]
struct Row {
    line: usize,
    /// The heading the table is under.
    heading: String,
    key: String,
    ty: String,
    default: String,
    env: String,
}

/// The text inside the first pair of backticks of `cell`.
fn first_code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

fn is_option_key(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').count() <= 2
        && s.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// The rows of CONFIG.md's option tables: table rows whose first cell is a backticked
/// option name (`server.listen`, `data_dir`).
fn config_rows(md: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut heading = String::new();
    for (i, line) in md.lines().enumerate() {
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
            continue;
        }
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(key) = cells
            .first()
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        if !is_option_key(key) {
            continue;
        }
        assert!(
            cells.len() >= 5,
            "CONFIG.md line {}: an option row needs key | type | default | environment | meaning",
            i + 1
        );
        rows.push(Row {
            line: i + 1,
            heading: heading.clone(),
            key: key.to_string(),
            ty: cells[1].to_string(),
            default: cells[2].to_string(),
            env: cells[3].to_string(),
        });
    }
    rows
}

/// (a) Every option is in CONFIG.md, in its section's table, with the right type, default
/// and environment variable.
#[test]
fn config_md_documents_every_option() {
    let md = read("docs/CONFIG.md");
    let rows = config_rows(&md);
    let mut problems = Vec::new();
    for (key, value) in defaults() {
        let Some(row) = rows.iter().find(|r| r.key == key) else {
            problems.push(format!("`{key}` is not in an option table"));
            continue;
        };
        let at = format!("CONFIG.md line {} (`{key}`)", row.line);
        match key.split_once('.') {
            Some((section, _)) if !row.heading.contains(&format!("[{section}]")) => {
                problems.push(format!(
                    "{at}: listed under `{}`, not the `[{section}]` table",
                    row.heading
                ));
            }
            None if !row.heading.to_lowercase().contains("top level") => {
                problems.push(format!("{at}: listed under `{}`, not the top-level table", row.heading));
            }
            _ => {}
        }
        if row.ty != type_name(&value) {
            problems.push(format!("{at}: type `{}`, the struct has {}", row.ty, type_name(&value)));
        }
        let literal = first_code(&row.default).unwrap_or_default();
        match toml::from_str::<toml::Table>(&format!("v = {literal}")) {
            Ok(t) if t.get("v") == Some(&value) => {}
            Ok(t) => problems.push(format!(
                "{at}: default `{literal}` but the struct's is {value} ({:?})",
                t.get("v")
            )),
            Err(e) => problems.push(format!("{at}: default `{literal}` is not a TOML value: {e}")),
        }
        let var = env_var(&key);
        if first_code(&row.env) != Some(var.as_str()) {
            problems.push(format!(
                "{at}: environment column should start with `{var}`, is {}",
                row.env
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONFIG.md is out of date:\n{}",
        problems.join("\n")
    );
}

/// (c) Every option CONFIG.md documents exists in the struct, once.
#[test]
fn config_md_has_no_stale_options() {
    let md = read("docs/CONFIG.md");
    let known = defaults();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for row in config_rows(&md) {
        if !known.contains_key(&row.key) {
            problems.push(format!("line {}: `{}` is not an option of Config", row.line, row.key));
        }
        if !seen.insert(row.key.clone()) {
            problems.push(format!("line {}: `{}` is documented twice", row.line, row.key));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONFIG.md documents options that do not exist:\n{}",
        problems.join("\n")
    );
}

/// (a), (b) The example file sets every option, each to its default, and loads.
#[test]
fn example_toml_has_every_option_at_its_default_and_loads() {
    let rel = "docs/filestore.example.toml";
    let text = read(rel);
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut example = BTreeMap::new();
    flatten(&table, "", &mut example);
    let defaults = defaults();
    let missing: Vec<_> = defaults.keys().filter(|k| !example.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{rel} lacks options: {missing:?}");
    let unknown: Vec<_> = example.keys().filter(|k| !defaults.contains_key(*k)).collect();
    assert!(unknown.is_empty(), "{rel} has keys Config does not know: {unknown:?}");
    let changed: Vec<_> = defaults
        .iter()
        .filter(|(k, v)| example.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: example {:?}, default {v}", example[k]))
        .collect();
    assert!(
        changed.is_empty(),
        "{rel} should show the defaults:\n{}",
        changed.join("\n")
    );

    let path: &Path = &repo().join(rel);
    let loaded = Config::load(Some(path), std::iter::empty()).unwrap_or_else(|e| panic!("loading {rel}: {e}"));
    let mut reloaded = BTreeMap::new();
    flatten(&toml::Table::try_from(loaded).expect("serialises"), "", &mut reloaded);
    assert_eq!(reloaded, defaults, "{rel} must load to the default configuration");
}

/// The TOML examples in CONFIG.md are valid configurations.
#[test]
fn config_md_toml_examples_load() {
    let md = read("docs/CONFIG.md");
    let blocks: Vec<&str> = md
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(!blocks.is_empty(), "CONFIG.md has no TOML example");
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("example-{i}.toml"));
        std::fs::write(&path, block).expect("write the example");
        if let Err(e) = Config::load(Some(&path), std::iter::empty()) {
            panic!("CONFIG.md TOML example {} does not load: {e}\n{block}", i + 1);
        }
    }
}

/// Metric names in `text`: what follows `"filestore_`, `# HELP filestore_` and
/// `# TYPE filestore_` (string literals and exposition lines in the source).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for marker in ["\"filestore_", "# HELP filestore_", "# TYPE filestore_"] {
        for (at, _) in text.match_indices(marker) {
            let start = at + marker.len() - "filestore_".len();
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// (d) Every metric the server renders is described in OPERATIONS.md.
#[test]
fn operations_md_describes_every_metric() {
    let mut names = BTreeSet::new();
    for src in ["src/metrics.rs", "src/http/ops.rs"] {
        names.extend(metric_names(&read(src)));
    }
    for expected in ["filestore_http_requests_total", "filestore_transfer_backlog"] {
        assert!(
            names.contains(expected),
            "the metric scan found no {expected}: {names:?}"
        );
    }
    let ops = read("docs/OPERATIONS.md");
    let missing: Vec<_> = names.iter().filter(|n| !ops.contains(&format!("`{n}`"))).collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md does not describe these metrics: {missing:?}"
    );
}
