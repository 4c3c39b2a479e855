//! The real Docker engine for tests and benchmarks, through the `docker` CLI: a tiny local
//! image (no registry is reachable: a busybox-static rootfs through `docker import`), and a
//! scope that labels every container it starts and removes its containers, networks and
//! images when dropped.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The static busybox the images are made of (Debian's `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// The applets the test containers use.
const APPLETS: &[&str] = &["sh", "sleep", "test", "touch", "rm", "cat", "nc", "httpd"];

/// A container command that runs until stopped and exits at once on SIGTERM (PID 1 has no
/// default signal handlers, so it must trap).
pub const IDLE: &[&str] = &["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

/// Runs `docker args…`; panics with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker ({e}); is the Docker CLI installed?"));
    assert!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `docker args…` without failing the test: (success, stdout).
pub fn docker_quiet(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(output) => (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ),
        Err(_) => (false, String::new()),
    }
}

fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Containers, networks and images of one test, all removed on drop.
pub struct DockerScope {
    /// `berth-test=<id>`: the label on every container of the scope.
    pub label: String,
    pub id: String,
    base_image: String,
    /// Every tag the scope made (behind a lock so tests can tag while holding the scope).
    images: std::sync::Mutex<Vec<String>>,
    networks: Vec<String>,
}

impl DockerScope {
    /// Imports the scope's base image from the static busybox.
    pub fn new() -> DockerScope {
        let (reachable, _) = docker_quiet(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert!(
            reachable,
            "the Docker engine is not reachable (is dockerd running?)"
        );
        let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
            panic!(
                "{BUSYBOX}: {e}; run ./scripts/install-test-deps (Debian package busybox-static)"
            )
        });
        assert!(
            !has_interpreter(&busybox),
            "{BUSYBOX} is dynamically linked (an image without libc cannot run it); install \
             Debian's busybox-static"
        );
        let id = unique();
        let rootfs = tempfile::tempdir().expect("temporary rootfs");
        let bin = rootfs.path().join("bin");
        std::fs::create_dir_all(&bin).expect("rootfs/bin");
        std::fs::create_dir_all(rootfs.path().join("tmp")).expect("rootfs/tmp");
        std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
        let base_image = format!("berth-test-{id}/base:1");
        import(rootfs.path(), &base_image);
        DockerScope {
            label: format!("berth-test={id}"),
            id,
            images: std::sync::Mutex::new(vec![base_image.clone()]),
            base_image,
            networks: Vec::new(),
        }
    }

    /// The base image under another name (`web:1.2.3` → `berth-test-<id>/web:1.2.3`), so a
    /// test chooses the image name the agent sees.
    pub fn image(&self, name_and_tag: &str) -> String {
        let image = format!("berth-test-{}/{name_and_tag}", self.id);
        docker(&["tag", &self.base_image, &image]);
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(image.clone());
        image
    }

    /// A user-defined bridge network of the scope.
    pub fn network(&mut self) -> String {
        let name = format!("berth-test-{}-{}", self.id, self.networks.len());
        docker(&["network", "create", "--label", &self.label, &name]);
        self.networks.push(name.clone());
        name
    }

    /// `docker run -d --label <scope> args… image command…`; the container id.
    pub fn run(&self, args: &[&str], image: &str, command: &[&str]) -> String {
        let mut all = vec!["run", "-d", "--label", &self.label];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(command);
        docker(&all)
    }

    /// The ids of the scope's running containers.
    pub fn running(&self) -> Vec<String> {
        let filter = format!("label={}", self.label);
        let mut ids: Vec<String> = docker(&["ps", "-q", "--no-trunc", "--filter", &filter])
            .lines()
            .map(String::from)
            .collect();
        ids.sort();
        ids
    }
}

impl Default for DockerScope {
    fn default() -> Self {
        DockerScope::new()
    }
}

/// Whether a 64-bit little-endian ELF file asks for a program interpreter (`PT_INTERP`), i.e.
/// is dynamically linked.
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |at: usize, len: usize| -> u64 {
        elf.get(at..at + len)
            .map(|b| {
                b.iter()
                    .rev()
                    .fold(0u64, |n, byte| (n << 8) | u64::from(*byte))
            })
            .unwrap_or(0)
    };
    let (table, entry_size, entries) = (read(32, 8) as usize, read(54, 2) as usize, read(56, 2));
    (0..entries as usize).any(|i| read(table + i * entry_size, 4) == 3)
}

fn import(rootfs: &Path, image: &str) {
    let tar = Command::new("tar")
        .args(["-C", &rootfs.display().to_string(), "-c", "."])
        .output()
        .expect("tar the rootfs");
    assert!(tar.status.success(), "tar failed");
    let mut child = Command::new("docker")
        .args(["import", "--change", "CMD [\"/bin/sh\"]", "-", image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker import");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&tar.stdout).expect("feed docker import");
    }
    assert!(
        child.wait().expect("docker import").success(),
        "docker import failed"
    );
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let (_, ids) = docker_quiet(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            docker_quiet(&args);
        }
        for network in &self.networks {
            docker_quiet(&["network", "rm", network]);
        }
        let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        for image in images.iter().rev() {
            docker_quiet(&["rmi", "-f", image]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tells_static_from_dynamic_binaries() {
        let busybox = std::fs::read(super::BUSYBOX).expect("busybox-static is installed");
        assert!(!super::has_interpreter(&busybox));
        assert!(super::has_interpreter(&std::fs::read("/bin/ls").unwrap()));
    }
}
