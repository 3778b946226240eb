//! Compiles the golden schemas in `schemas/*.capnp` (the checked-in output
//! of `capnp_schema()`, see `tests/interop.rs`) with the official Cap'n
//! Proto compiler and capnpc-rust, so the interop tests can read and write
//! the same bytes through independently generated code.
//!
//! Needs the `capnp` binary (Debian package `capnproto`); `CAPNP=/path`
//! picks another one. Without it the build fails: it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let schema_dir = manifest_dir.join("schemas");
    println!("cargo:rerun-if-changed=build.rs");
    // A directory's mtime changes when a file is added or removed; each
    // file is watched for its content.
    println!("cargo:rerun-if-changed={}", schema_dir.display());
    println!("cargo:rerun-if-env-changed=CAPNP");

    let capnp = std::env::var_os("CAPNP").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("capnp"));
    check_capnp(&capnp);

    let mut schemas: Vec<PathBuf> = std::fs::read_dir(&schema_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", schema_dir.display()))
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "capnp"))
        .collect();
    schemas.sort();
    assert!(!schemas.is_empty(), "no .capnp files in {}", schema_dir.display());

    // One compiler run per file: each golden file is a complete, standalone
    // schema, and two of them may declare the same shared type (same id).
    for schema in &schemas {
        println!("cargo:rerun-if-changed={}", schema.display());
        compile(&capnp, &schema_dir, schema);
    }
}

/// Fails the build, loudly, when the Cap'n Proto compiler cannot run.
fn check_capnp(capnp: &Path) {
    let hint = "taskgraph-tests needs the Cap'n Proto compiler `capnp` (0.9 or later) to build: \
                run `scripts/install-deps` (or install the Debian/Ubuntu package `capnproto`), \
                or point the CAPNP environment variable at the binary";
    let problem = match Command::new(capnp).arg("--version").output() {
        Ok(out) if out.status.success() => return,
        Ok(out) => format!(
            "`{} --version` failed ({}): {}",
            capnp.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run `{}` ({e})", capnp.display()),
    };
    fail(&format!("{problem}.\n{hint}"));
}

fn compile(capnp: &Path, schema_dir: &Path, schema: &Path) {
    if let Err(e) = capnpc::CompilerCommand::new()
        .capnp_executable(capnp)
        .src_prefix(schema_dir)
        .file(schema)
        .run()
    {
        fail(&format!("capnpc failed on {}: {e}", schema.display()));
    }
}

/// Stops the build with `message` (no panic backtrace to wade through).
fn fail(message: &str) -> ! {
    eprintln!("\nerror: {message}\n");
    std::process::exit(1);
}
