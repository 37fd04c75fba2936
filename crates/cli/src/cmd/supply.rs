//! `berth push`, `berth sign`, `berth keygen`, and the supply-chain options of `dev up`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use berth_docker::DockerClient;
use berth_docker::supervisor::supply::SupplyChain;
use berth_trust::{Credentials, Policy, Registry, RegistryOptions, Signer, TrustedKey, keys};

/// Registry access options shared by `push`, `sign` and `dev up`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) spoken to over plain HTTP; loopback registries always are.
    /// Repeatable.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Registry credentials: a docker config JSON ({"auths": {...}}, what `docker login`
    /// writes) [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if present].
    #[arg(
        long = "registry-auth",
        value_name = "FILE",
        env = "BERTH_REGISTRY_AUTH"
    )]
    pub auth_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry options these name.
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let file = match &self.auth_file {
            Some(f) => Some(f.clone()),
            None => std::env::var_os("DOCKER_CONFIG")
                .map(|d| PathBuf::from(d).join("config.json"))
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
                })
                .filter(|p| p.is_file()),
        };
        let credentials = match file {
            Some(f) => {
                let bytes = std::fs::read(&f).with_context(|| format!("{}", f.display()))?;
                Credentials::from_docker_config(&f.display().to_string(), &bytes)
                    .map_err(|e| anyhow!("{e}"))?
            }
            None => Credentials::none(),
        };
        Ok(RegistryOptions {
            insecure: self.insecure.clone(),
            credentials,
        })
    }
}

/// The platform's signature policy for `dev up`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Require plugins to carry a cosign signature by this public key (a .pub PEM file);
    /// repeatable: any of the keys will do. Unsigned images, other signers, and manifests
    /// asking for more than the signed image declares are refused.
    #[arg(long = "require-signature", value_name = "KEY.pub")]
    pub keys: Vec<PathBuf>,
    /// Which plugins must be signed: names, or prefixes ending in `*` [default: all, once a
    /// key is given].
    #[arg(long = "signed-plugins", value_name = "NAME", value_delimiter = ',')]
    pub plugins: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl TrustArgs {
    /// The settings the supervisor gets.
    pub fn supply_chain(&self) -> anyhow::Result<SupplyChain> {
        let keys = self
            .keys
            .iter()
            .map(|path| read_public_key(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let require = if !self.plugins.is_empty() {
            self.plugins.clone()
        } else if keys.is_empty() {
            Vec::new()
        } else {
            vec!["*".to_owned()]
        };
        Ok(SupplyChain {
            policy: Policy::new(keys, require).map_err(|e| anyhow!("{e}"))?,
            registry: self.registry.options()?,
        })
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<TrustedKey> {
    let name = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| {
        anyhow!("--require-signature {name}: {e}; pass the .pub file `berth keygen` wrote")
    })?;
    TrustedKey::from_pem(&name, &pem).map_err(|e| anyhow!("--require-signature {e}"))
}

/// Options of `berth keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write: PREFIX.key (private, encrypted with $COSIGN_PASSWORD) and PREFIX.pub.
    #[arg(long, default_value = "berth")]
    pub output: PathBuf,
}

/// Options of `berth sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The image in its registry, HOST[:PORT]/REPO:TAG or …@sha256:….
    pub image: String,
    /// The private key (cosign format; its password in $COSIGN_PASSWORD).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Options of `berth push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The local image, e.g. berth/calculator:0.1.0.
    pub image: String,
    /// Where to push it, HOST[:PORT]/REPO:TAG [default: IMAGE itself, which must then
    /// name a registry].
    #[arg(long, value_name = "REF")]
    pub to: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn password() -> String {
    std::env::var("COSIGN_PASSWORD").unwrap_or_default()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `berth keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let private = args.output.with_extension("key");
    let public = args.output.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            return Err(anyhow!(
                "{} exists; move it away or pass --output OTHER",
                p.display()
            ));
        }
    }
    let pair = keys::generate(password().as_bytes()).map_err(|e| anyhow!("{e}"))?;
    write_private(&private, &pair.private_pem)?;
    std::fs::write(&public, &pair.public_pem).with_context(|| format!("{}", public.display()))?;
    println!(
        "wrote {} (private, encrypted with $COSIGN_PASSWORD) and {} (public: give it to `dev up --require-signature`)",
        private.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("{}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("{}", path.display()))
}

/// `berth sign`.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let name = args.key.display().to_string();
    let pem = std::fs::read(&args.key).map_err(|e| anyhow!("--key {name}: {e}"))?;
    let signer = keys::signer(&name, &pem, password().as_bytes()).map_err(|e| anyhow!("{e}"))?;
    let registry = Registry::new(args.registry.options()?);
    let signed = runtime()?
        .block_on(Signer::new(registry).sign(&args.image, signer))
        .map_err(|e| anyhow!("{e}"))?;
    println!("signed {} with {name}", signed.pinned);
    Ok(ExitCode::SUCCESS)
}

/// `berth push`: pushes a local image through the engine; prints the digest.
pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let options = args.registry.options()?;
    let digest = runtime()?.block_on(push_image(&args.image, args.to.as_deref(), &options))?;
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

/// Tags `image` as `to` (when given) and pushes it; returns `REF@sha256:…`.
pub async fn push_image(
    image: &str,
    to: Option<&str>,
    options: &RegistryOptions,
) -> anyhow::Result<String> {
    let target = to.unwrap_or(image);
    let reference = Registry::parse(target).map_err(|e| anyhow!("{e}"))?;
    let docker = DockerClient::connect().await?;
    docker
        .inspect_image(image)
        .await
        .map_err(|e| anyhow!("{e}; build it first (`berth build DIR`)"))?;
    if target != image {
        docker.tag_image(image, target).await?;
    }
    let host = reference.resolve_registry().to_owned();
    let digest = docker
        .push_image(target, options.credentials.basic(&host), |_| {})
        .await?;
    Ok(format!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    ))
}
