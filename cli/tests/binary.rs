//! The `puce` binary runs and names itself. Also the target through which the end-to-end tests
//! build `puce` (`puce_tests::puce_bin`): building it with `cargo test --workspace` resolves
//! dependency features as the test run does, so the binary is not rebuilt with other features.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_binary_runs_and_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_puce"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(v.starts_with("puce "), "{v}");
    // The commit it was built from (build.rs), or "unknown" outside a git checkout.
    assert!(
        v.contains(" (commit ") && v.trim_end().ends_with(')'),
        "{v}"
    );
}
