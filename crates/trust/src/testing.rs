//! A real OCI registry for tests: Debian's `docker-registry`, started on a free
//! 127.0.0.1 port with its own storage, with or without htpasswd authentication; and a way
//! to put small images with chosen labels into it without an engine.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

use crate::{Credentials, Registry, RegistryOptions};

/// A running `docker-registry`; stopped and its storage removed on drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The username and password when started with authentication.
    pub login: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl TestRegistry {
    /// Starts a registry without authentication.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// Starts a registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_login(user: &str, password: &str) -> Self {
        Self::spawn(Some((user.to_owned(), password.to_owned())))
    }

    fn spawn(login: Option<(String, String)>) -> Self {
        let bin = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry is not installed: `apt-get install docker-registry` (CI installs it)")
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &login {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap_or_else(|e| {
                    panic!("htpasswd: {e}; `apt-get install apache2-utils` (CI installs it)")
                });
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = TestRegistry {
            addr,
            login,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within 20 s: {}",
                registry.addr,
                std::fs::read_to_string(registry._dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// Credentials for this registry (empty without authentication).
    pub fn credentials(&self) -> Credentials {
        let mut c = Credentials::none();
        if let Some((u, p)) = &self.login {
            c.insert(&self.addr, u, p);
        }
        c
    }

    /// Registry access with this registry's credentials.
    pub fn access(&self) -> Registry {
        Registry::new(RegistryOptions {
            insecure: vec![],
            credentials: self.credentials(),
        })
    }

    /// A `dockerconfigjson` document holding this registry's credentials.
    pub fn docker_config_json(&self) -> String {
        use base64::Engine as _;
        let (u, p) = self.login.clone().unwrap_or_default();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            self.addr
        )
    }

    /// Pushes a one-layer image to `REPO:TAG` on this registry with `labels` in its
    /// config (and `salt` in its layer, so equal labels can still give new digests);
    /// returns the manifest digest.
    pub async fn push_image(
        &self,
        repo_tag: &str,
        labels: &BTreeMap<String, String>,
        salt: &str,
    ) -> String {
        let reference: oci_client::Reference = format!("{}/{repo_tag}", self.addr)
            .parse()
            .expect("a reference");
        let layer = ImageLayer::oci_v1(format!("layer {salt}").into_bytes(), None);
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels, "User": "65532:65532"},
            "rootfs": {"type": "layers", "diff_ids": [layer.sha256_digest()]},
        });
        let config = Config::oci_v1(serde_json::to_vec(&config).expect("json"), None);
        let auth = match &self.login {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let client = self.access().client(&self.addr);
        client
            .push(&reference, &[layer], config, &auth, None)
            .await
            .expect("push a test image");
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .expect("the pushed image's digest")
    }

    /// Pushes a `.sig` manifest for `digest` in `repo` whose only layer is `payload`,
    /// with no valid signature: a malformed signature.
    pub async fn push_malformed_signature(&self, repo: &str, digest: &str, payload: &[u8]) {
        let reference: oci_client::Reference =
            format!("{}/{repo}:{}.sig", self.addr, digest.replace(':', "-"))
                .parse()
                .expect("a reference");
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "dev.cosignproject.cosign/signature".to_owned(),
            "bm90IGEgc2lnbmF0dXJl".to_owned(),
        );
        let layer = ImageLayer::new(
            payload.to_vec(),
            "application/vnd.dev.cosign.simplesigning.v1+json".to_owned(),
            Some(annotations),
        );
        let config = Config::oci_v1(b"{}".to_vec(), None);
        let auth = match &self.login {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        self.access()
            .client(&self.addr)
            .push(&reference, &[layer], config, &auth, None)
            .await
            .expect("push a malformed signature");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
