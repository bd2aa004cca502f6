//! Helpers shared by the integration tests: where the Python reference tools live.
//!
//! The venv is made by `scripts/provision-python.sh`; its location follows the same rule as
//! that script: `$VERTEBRA_VENV`, else `$XDG_CACHE_HOME/vertebra/venv`, else
//! `$HOME/.cache/vertebra/venv`. A missing venv fails the test with instructions: reference
//! checks are never skipped silently.

use std::path::{Path, PathBuf};

/// The venv root, asserting that `bin/<tool>` exists for every tool named.
pub fn venv(tools: &[&str]) -> PathBuf {
    let venv = std::env::var_os("VERTEBRA_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| Path::new(&c).join("vertebra/venv")))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("neither VERTEBRA_VENV nor HOME is set");
            Path::new(&home).join(".cache/vertebra/venv")
        });
    for tool in tools {
        let path = venv.join("bin").join(tool);
        assert!(
            path.is_file(),
            "{} is missing: provision the Python reference tools with \
             scripts/provision-python.sh (or point VERTEBRA_VENV at a venv that has them)",
            path.display()
        );
    }
    venv
}

/// The venv's Python interpreter.
#[allow(dead_code)] // not every test binary that includes this module runs Python directly
pub fn venv_python() -> PathBuf {
    venv(&["python"]).join("bin/python")
}
