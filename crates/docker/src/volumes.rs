//! Named volumes of an instance, handed to the plugin user so `readWrite` mounts are writable.
//!
//! The engine creates a volume's root directory owned by root with mode 0755, and plugins
//! run as 65532 without capabilities, so a fresh volume would be read-only to them. When a
//! volume is new, its root is given to 65532: the engine unpacks a one-entry archive into a
//! container that mounts the volume and is never started (no shell or `chown` is needed, and
//! nothing runs).

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptions, UploadToContainerOptionsBuilder};

use crate::MANAGED_BY_LABEL;
use crate::client::{BuildRequest, DockerClient};
use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::networks::status_of;

/// An empty image (`FROM scratch`) for the never-started container that hands a new volume
/// to the plugin user; built on first use.
pub const VOLUME_OWNER_IMAGE: &str = "berth/volume-owner:1";
/// Where that container mounts the volume.
const MOUNT_POINT: &str = "volume";
/// The user and group id of [`crate::PLUGIN_USER`].
const PLUGIN_UID: u64 = 65532;

impl DockerClient {
    /// Makes sure the named volume exists. A volume this call creates gets a root directory
    /// owned by the plugin user (65532, mode 0755); an existing volume is left as it is.
    pub async fn ensure_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
        let what = format!("volume {name}");
        let existed = match self.docker.inspect_volume(name).await {
            Ok(_) => true,
            Err(e) if status_of(&e, &[404]) => false,
            Err(e) => return Err(Error::from_engine("inspect the volume", &what, e)),
        };
        if existed {
            return Ok(());
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_owned()),
                driver: Some("local".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::from_engine("create the volume", &what, e))?;
        self.hand_to_plugin_user(name, labels).await
    }

    /// Makes the volume's root directory owned by the plugin user.
    async fn hand_to_plugin_user(
        &self,
        volume: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let what = format!("volume {volume}");
        self.ensure_volume_owner_image().await?;
        let created = self
            .docker
            .create_container(
                None::<CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(VOLUME_OWNER_IMAGE.into()),
                    // Never started; the engine only wants to know what it would run.
                    cmd: Some(vec!["/none".into()]),
                    // The volume's labels, so an interrupted run is removed with its instance.
                    labels: Some(labels),
                    network_disabled: Some(true),
                    host_config: Some(HostConfig {
                        mounts: Some(vec![Mount {
                            target: Some(format!("/{MOUNT_POINT}")),
                            source: Some(volume.to_owned()),
                            typ: Some(MountType::VOLUME),
                            ..Default::default()
                        }]),
                        network_mode: Some("none".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::from_engine("create the volume's owner container", &what, e))?;
        let upload = self
            .docker
            .upload_to_container(
                &created.id,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(owner_archive()?.into()),
            )
            .await
            .map_err(|e| Error::from_engine("give the volume to the plugin user", &what, e));
        let removed = self.remove_container(&created.id).await;
        upload?;
        match removed {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Builds [`VOLUME_OWNER_IMAGE`] unless the engine has it.
    async fn ensure_volume_owner_image(&self) -> Result<()> {
        match self.inspect_image(VOLUME_OWNER_IMAGE).await {
            Ok(_) => return Ok(()),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut context = BuildContext::new();
        context.add("Dockerfile", b"FROM scratch\n", 0o644)?;
        let request = BuildRequest {
            tag: VOLUME_OWNER_IMAGE.into(),
            labels: HashMap::from([(MANAGED_BY_LABEL.to_owned(), "berth".to_owned())]),
            build_args: HashMap::new(),
        };
        self.build_image(context.finish()?, &request, |_| {})
            .await
            .map(|_| ())
    }
}

/// A tar with one directory entry, [`MOUNT_POINT`], owned by the plugin user: unpacked at
/// `/`, it changes the owner of the mounted volume's root and adds nothing.
fn owner_archive() -> Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_uid(PLUGIN_UID);
    header.set_gid(PLUGIN_UID);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, format!("{MOUNT_POINT}/"), std::io::empty())
        .map_err(Error::Context)?;
    builder.into_inner().map_err(Error::Context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_archive_is_one_directory_owned_by_the_plugin_user() {
        let bytes = owner_archive().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, tar::EntryType, u64, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [(
                "volume/".to_owned(),
                tar::EntryType::Directory,
                65532,
                65532,
                0o755
            )]
        );
    }
}
