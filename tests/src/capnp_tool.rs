//! Running the official Cap'n Proto compiler `capnp` from the tests, on
//! schema text written into a scratch directory.
//!
//! The tests need the `capnp` binary on `PATH` (Debian package
//! `capnproto`, or `scripts/install-deps`); without it they fail with a
//! hint to install it, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory under the system temp dir, removed on drop.
///
/// Its name is `taskgraph-{tag}-{pid}`: tests running at the same time in
/// one process need different tags.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty `taskgraph-{tag}-{pid}`, removing any leftover.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("taskgraph-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `schema` to `dir/file` and runs `capnp compile {output} {file}`
/// in `dir`; returns what `capnp` wrote to stdout.
///
/// Panics with an install hint if `capnp` cannot run, and with capnp's
/// stderr and the schema if it rejects the schema.
pub fn compile(dir: &Path, file: &str, schema: &str, output: &str) -> Vec<u8> {
    std::fs::write(dir.join(file), schema).expect("write schema");
    let result = match Command::new("capnp").args(["compile", output, file]).current_dir(dir).output() {
        Ok(result) => result,
        Err(e) => panic!(
            "cannot run the Cap'n Proto compiler `capnp` ({e}); this test needs it on PATH: \
             run scripts/install-deps (Debian/Ubuntu: `apt-get install capnproto`)"
        ),
    };
    assert!(
        result.status.success(),
        "`capnp compile` rejected {file} ({}):\n{}\n--- schema ---\n{schema}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    result.stdout
}

/// `capnp compile -ocapnp` of `schema`: the schema back as text, with the
/// id of every node and the layout of every field in comments.
pub fn compile_to_capnp(dir: &Path, file: &str, schema: &str) -> String {
    String::from_utf8(compile(dir, file, schema, "-ocapnp")).expect("capnp output is UTF-8")
}

/// `capnp compile -o-` of `schema`: the `CodeGeneratorRequest` a plugin
/// would get, as a serialized Cap'n Proto message.
pub fn compile_to_request(dir: &Path, file: &str, schema: &str) -> Vec<u8> {
    compile(dir, file, schema, "-o-")
}
