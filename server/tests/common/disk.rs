//! A small filesystem for disk-full tests: a tmpfs the test mounts, which takes root (or
//! CAP_SYS_ADMIN). Where it cannot mount, the test says so and passes, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs, unmounted on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`, or says why it cannot and returns `None`.
    pub fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            outcome => {
                let why = match outcome {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI must run the disk-full tests, but a tmpfs cannot be mounted: {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs for a disk-full test ({why})");
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it but `leave` bytes with a file, which the caller removes to free the space.
    pub fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path().join("filler");
        let stats = rustix::fs::statvfs(self.path()).unwrap();
        let free = stats.f_bavail * stats.f_frsize;
        std::fs::write(&filler, vec![0u8; free.saturating_sub(leave) as usize]).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
