//! A channels config file for the binaries' `--config`.

use crate::unique_namespace;

/// A config file in a fresh temporary directory (removed with the value).
pub struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    pub fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pulse-config-{}", unique_namespace()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pulse.toml");
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
