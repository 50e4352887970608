//! Files and directories that hold secrets.

use std::path::Path;

/// Creates `dir` and any missing parents readable only by their owner
/// (0700): data and state directories hold secrets. An existing directory
/// keeps the mode its owner gave it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
