//! Resolution, signing and verification against a real registry (Debian's
//! `docker-registry` on 127.0.0.1), without and with htpasswd credentials.

use std::collections::BTreeMap;

use berth_trust::testing::TestRegistry;
use berth_trust::{
    Credentials, ErrorKind, Policy, Registry, RegistryOptions, Signer, TrustedKey, Verifier, keys,
};

fn labels(manifest: &str) -> BTreeMap<String, String> {
    [("dev.berth.manifest".to_owned(), manifest.to_owned())].into()
}

fn policy(pub_pem: &str) -> Policy {
    Policy::new(
        vec![TrustedKey::from_pem("release.pub", pub_pem).unwrap()],
        vec!["*".into()],
    )
    .unwrap()
}

#[tokio::test]
async fn resolve_sign_verify_and_refuse_without_auth() {
    let reg = TestRegistry::start();
    let access = reg.access();
    let image = format!("{}/berth/calc:0.1.0", reg.addr);
    let d1 = reg.push_image("berth/calc:0.1.0", &labels("a"), "1").await;

    // Tag → digest; the digest itself resolves to itself; unknown ones are named.
    let r = access.resolve(&image).await.unwrap();
    assert_eq!(r.digest, d1);
    assert_eq!(r.pinned, format!("{}/berth/calc@{d1}", reg.addr));
    assert_eq!(access.resolve(&r.pinned).await.unwrap().digest, d1);
    let unknown = format!("{}/berth/calc@sha256:{}", reg.addr, "ab".repeat(32));
    assert_eq!(
        access.resolve(&unknown).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let e = access
        .resolve(&format!("{}/berth/calc:9.9.9", reg.addr))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(
        access.config_labels(&r.pinned).await.unwrap()["dev.berth.manifest"],
        "a"
    );

    let release = keys::generate(b"pw").unwrap();
    let other = keys::generate(b"").unwrap();
    let verifier = Verifier::new(access.clone());

    // Unsigned.
    let e = verifier
        .verify(&r, &policy(&release.public_pem))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsigned, "{e}");
    assert!(e.message.contains("berth sign"), "{e}");

    // Signed by a key that is not trusted.
    let signer = Signer::new(access.clone());
    let other_key = keys::signer("other.key", other.private_pem.as_bytes(), b"").unwrap();
    signer.sign(&image, other_key).await.unwrap();
    let e = verifier
        .verify(&r, &policy(&release.public_pem))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::WrongKey, "{e}");
    assert!(e.message.contains("release.pub"), "{e}");

    // Signed by the trusted key too: accepted, then served from the cache.
    let key = keys::signer("release.key", release.private_pem.as_bytes(), b"pw").unwrap();
    let signed = signer.sign(&image, key).await.unwrap();
    assert_eq!(signed.digest, d1);
    let v = verifier
        .verify(&r, &policy(&release.public_pem))
        .await
        .unwrap();
    assert_eq!((v.key.as_str(), v.cached), ("release.pub", false));
    assert!(
        verifier
            .verify(&r, &policy(&release.public_pem))
            .await
            .unwrap()
            .cached
    );
    // The other signer's signature was kept beside the new one.
    assert!(
        verifier
            .verify(&r, &policy(&other.public_pem))
            .await
            .is_ok()
    );

    // The tag pushed again with a wider label: a new digest, which nobody signed.
    let d2 = reg
        .push_image("berth/calc:0.1.0", &labels("wider"), "2")
        .await;
    assert_ne!(d1, d2);
    let r2 = access.resolve(&image).await.unwrap();
    assert_eq!(r2.digest, d2);
    let e = verifier
        .verify(&r2, &policy(&release.public_pem))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsigned, "{e}");

    // A signature whose payload is not a cosign payload.
    let d3 = reg.push_image("berth/calc:bad", &labels("a"), "3").await;
    reg.push_malformed_signature("berth/calc", &d3, b"{not json")
        .await;
    let r3 = access
        .resolve(&format!("{}/berth/calc:bad", reg.addr))
        .await
        .unwrap();
    assert_eq!(r3.digest, d3);
    let e = verifier
        .verify(&r3, &policy(&release.public_pem))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Malformed, "{e}");
}

#[tokio::test]
async fn an_unreachable_registry_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let access = Registry::new(RegistryOptions::default());
    let e = access
        .resolve(&format!("127.0.0.1:{port}/berth/calc:0.1.0"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.message.contains("cannot reach the registry"), "{e}");
}

#[tokio::test]
async fn credentials_are_used_and_wrong_ones_are_named() {
    let reg = TestRegistry::start_with_login("berth", "s3cret");
    let image = format!("{}/berth/calc:0.1.0", reg.addr);
    let digest = reg.push_image("berth/calc:0.1.0", &labels("a"), "1").await;

    let anonymous = Registry::new(RegistryOptions::default());
    let e = anonymous.resolve(&image).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");

    let mut expired = Credentials::none();
    expired.insert(&reg.addr, "berth", "old-password");
    let e = Registry::new(RegistryOptions {
        insecure: vec![],
        credentials: expired,
    })
    .resolve(&image)
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
    assert!(e.message.contains("log in again"), "{e}");

    // From the dockerconfigjson shape an imagePullSecret holds.
    let creds = Credentials::from_docker_config("secret pull", reg.docker_config_json().as_bytes())
        .unwrap();
    let access = Registry::new(RegistryOptions {
        insecure: vec![],
        credentials: creds,
    });
    let r = access.resolve(&image).await.unwrap();
    assert_eq!(r.digest, digest);
    let pair = keys::generate(b"").unwrap();
    let key = keys::signer("k", pair.private_pem.as_bytes(), b"").unwrap();
    Signer::new(access.clone()).sign(&image, key).await.unwrap();
    let v = Verifier::new(access)
        .verify(&r, &policy(&pair.public_pem))
        .await
        .unwrap();
    assert_eq!(v.digest, digest);
}
