//! Golden files of the `--json` output schemas: the key structure and value types of each
//! command's JSON (values, which vary from run to run, are left out), in
//! `tests/golden/json/<name>.json`, compared exactly. A renamed, removed, added or retyped
//! field fails the test that prints it; `UPDATE_GOLDEN=1` rewrites the files instead (then
//! review the diff: scripts read these fields).

use std::fs;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

/// The schema of a JSON value: each leaf replaced by its type (`string`, `integer`, `number`,
/// `bool`, `null`); an array by a one-element array of its elements' schemas merged (`[]` when
/// empty). Where elements differ, a leaf lists its types joined by `|`, and a key some
/// elements lack lists `absent`.
pub fn schema(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_f64() => json!("number"),
        Value::Number(_) => json!("integer"),
        Value::String(_) => json!("string"),
        Value::Array(items) => match items.iter().map(schema).reduce(merge) {
            Some(s) => json!([s]),
            None => json!([]),
        },
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), schema(v))).collect()),
    }
}

/// One schema that describes values of schema `a` and values of schema `b`.
fn merge(a: Value, b: Value) -> Value {
    match (a, b) {
        (a, b) if a == b => a,
        (Value::Object(mut x), Value::Object(mut y)) => {
            let keys: Vec<String> = x.keys().chain(y.keys()).cloned().collect();
            let mut out = Map::new();
            for k in keys {
                if out.contains_key(&k) {
                    continue;
                }
                let absent = || json!("absent");
                let v = merge(
                    x.remove(&k).unwrap_or_else(absent),
                    y.remove(&k).unwrap_or_else(absent),
                );
                out.insert(k, v);
            }
            Value::Object(out)
        }
        (Value::Array(mut x), Value::Array(mut y)) => match (x.pop(), y.pop()) {
            (Some(p), Some(q)) => json!([merge(p, q)]),
            (p, q) => json!([p.or(q)]),
        },
        (a, b) => {
            let mut types: Vec<String> = [a, b]
                .iter()
                .flat_map(|t| match t {
                    Value::String(s) => s.split('|').map(str::to_string).collect(),
                    other => vec![other.to_string()],
                })
                .collect();
            types.sort();
            types.dedup();
            json!(types.join("|"))
        }
    }
}

/// The golden file of `name`.
fn path(name: &str) -> PathBuf {
    crate::workspace()
        .join("tests/golden/json")
        .join(format!("{name}.json"))
}

/// Require that the schema of `v` (the `--json` output of a command, named `name`, e.g.
/// `gc-dry-run`) is the one in its golden file; with `UPDATE_GOLDEN=1`, write it there.
pub fn assert_json_schema(name: &str, v: &Value) {
    let mut text = serde_json::to_string_pretty(&schema(v)).unwrap();
    text.push('\n');
    let file = path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|u| u == "1") {
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, &text).unwrap();
        return;
    }
    let golden = fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "no golden file {} ({e}): run the test with UPDATE_GOLDEN=1 to write it",
            file.display()
        )
    });
    assert!(
        golden == text,
        "the --json schema of {name} changed: golden file {}:\n{golden}\nnow:\n{text}\n\
         If the change is meant (scripts read these fields), run the test with \
         UPDATE_GOLDEN=1 and commit the new file.",
        file.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_keep_keys_and_types_and_merge_array_elements() {
        let v = json!({
            "id": "abc",
            "n": 3,
            "ratio": 1.5,
            "ok": true,
            "gone": null,
            "rows": [{"a": 1, "t": "x"}, {"a": 2}, {"a": null, "t": "y"}],
            "none": [],
        });
        assert_eq!(
            schema(&v),
            json!({
                "id": "string",
                "n": "integer",
                "ratio": "number",
                "ok": "bool",
                "gone": "null",
                "rows": [{"a": "integer|null", "t": "absent|string"}],
                "none": [],
            })
        );
        // Values do not matter, only their types.
        let w = json!({"id": "def", "n": 4, "ratio": 0.0, "ok": false, "gone": null,
            "rows": [{"a": null, "t": "z"}, {"a": 7}], "none": []});
        assert_eq!(schema(&v), schema(&w));
    }
}
