//! Local Docker mode's state: what should run (plugins, grants, settings) and what the
//! supervisor observed (revisions, statuses).
//!
//! A foreground supervisor, CLI commands and a gateway may use one file at once. Every write
//! that takes more than one statement runs in one IMMEDIATE transaction, and reads are single
//! statements that see what was committed before them. Two counters tell a poller that
//! something changed: [`Store::data_version`] moves when *another* connection commits, and
//! [`Store::change_counter`] moves with every desired-state write made through this module
//! (plugins, their `enabled` flag, grants), whoever made it.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::Serialize;

use crate::time::format_time;
use crate::{Error, Result, Store};

/// A plugin installed in local mode: the desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstalledPlugin {
    /// The plugin's name.
    pub name: String,
    /// The Plugin document as given.
    pub manifest_yaml: String,
    /// The file it came from, for messages and `--watch`.
    pub source: Option<String>,
    /// Whether it should run.
    pub enabled: bool,
    /// The plugin's gateway bearer token, in clear text (the file is `0600`).
    pub token: String,
    /// When it was first installed (RFC 3339).
    pub installed_at: String,
    /// When its manifest, source or `enabled` flag last changed (RFC 3339).
    pub updated_at: String,
}

/// A grant recorded by `berth grant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantRecord {
    /// Unique id, increasing; never reused.
    pub id: i64,
    /// The plugin it is for.
    pub plugin: String,
    /// The granted permissions as JSON; opaque to the store.
    pub permissions_json: String,
    /// The plugin's risk score when it was granted.
    pub risk_score: u32,
    /// Who granted it.
    pub granted_by: String,
    /// Why, if given.
    pub reason: Option<String>,
    /// When it was granted (RFC 3339).
    pub granted_at: String,
    /// When it stops applying (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
}

/// One revision of a plugin: an image and manifest that was (or is being) run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevisionRecord {
    /// The plugin.
    pub plugin: String,
    /// The revision number, from 1; never reused for the plugin, even after a re-install.
    pub revision: u64,
    /// The image reference run.
    pub image: String,
    /// SHA-256 (hex) of the manifest run.
    pub manifest_sha256: String,
    /// `Starting`, `Ready`, `Failed`, `RolledBack` or `Retired`; opaque to the store.
    pub state: String,
    /// Why it is in that state, if known.
    pub reason: Option<String>,
    /// The container running it, once there is one.
    pub container_id: Option<String>,
    /// Where the gateway reaches it, once known.
    pub endpoint: Option<String>,
    /// When it was recorded (RFC 3339).
    pub created_at: String,
    /// When it became `Ready` (RFC 3339), if it did.
    pub ready_at: Option<String>,
    /// `sha256:…` of what ran: the registry manifest digest for a registry image, the
    /// engine's image id for a local one.
    pub image_digest: Option<String>,
    /// The trusted key that signed that digest, when the platform required a signature.
    pub signed_by: Option<String>,
}

/// What the supervisor last observed about a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginStatusRecord {
    /// The plugin.
    pub plugin: String,
    /// The phase's name; opaque to the store.
    pub phase: String,
    /// Why it is in that phase, if known.
    pub reason: Option<String>,
    /// The revision serving calls, if any.
    pub serving_revision: Option<u64>,
    /// How many times its container was restarted.
    pub restarts: u32,
    /// When this was observed (RFC 3339).
    pub updated_at: String,
}

const PLUGIN_COLUMNS: &str =
    "name, manifest_yaml, source, enabled, token, installed_at, updated_at";
const GRANT_COLUMNS: &str = "id, plugin, permissions_json, risk_score, granted_by, reason, \
     granted_at, expires_at, revoked_at";
const REVISION_COLUMNS: &str = "plugin, revision, image, manifest_sha256, state, reason, \
     container_id, endpoint, created_at, ready_at, image_digest, signed_by";
const STATUS_COLUMNS: &str = "plugin, phase, reason, serving_revision, restarts, updated_at";

impl Store {
    /// Installs `name`, or updates its manifest and source when it is installed already
    /// (keeping its token, `enabled` flag and installation time). A new plugin is enabled and
    /// gets a fresh random token (32 bytes, 64 hex digits).
    pub fn upsert_plugin(
        &self,
        name: &str,
        manifest_yaml: &str,
        source: Option<&str>,
    ) -> Result<InstalledPlugin> {
        let token = berth_contract::credential::generate_token().map_err(Error::Random)?;
        self.write(|tx| {
            let now = now();
            tx.execute(
                "INSERT INTO local_plugins
                 (name, manifest_yaml, source, enabled, token, installed_at, updated_at)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)
                 ON CONFLICT (name) DO UPDATE SET
                     manifest_yaml = excluded.manifest_yaml,
                     source = excluded.source,
                     updated_at = excluded.updated_at",
                params![name, manifest_yaml, source, token, now],
            )?;
            bump_changes(tx)?;
            Ok(tx.query_row(
                &format!("SELECT {PLUGIN_COLUMNS} FROM local_plugins WHERE name = ?1"),
                [name],
                row_to_plugin,
            )?)
        })
    }

    /// The installed plugin `name`, if any.
    pub fn plugin(&self, name: &str) -> Result<Option<InstalledPlugin>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PLUGIN_COLUMNS} FROM local_plugins WHERE name = ?1"
            ))?;
            Ok(stmt.query_row([name], row_to_plugin).optional()?)
        })
    }

    /// Every installed plugin, ordered by name.
    pub fn plugins(&self) -> Result<Vec<InstalledPlugin>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PLUGIN_COLUMNS} FROM local_plugins ORDER BY name"
            ))?;
            let rows = stmt.query_map([], row_to_plugin)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Uninstalls `name` in one transaction: deletes the plugin, its status and its
    /// revisions, and revokes its active grants. Its revision counter is kept, so a
    /// re-install never reuses a revision number. Returns false when it was not installed
    /// (leftover status, revisions and grants are cleared all the same).
    pub fn remove_plugin(&self, name: &str) -> Result<bool> {
        let now_ts = Timestamp::now();
        self.write(|tx| {
            let removed = tx.execute("DELETE FROM local_plugins WHERE name = ?1", [name])?;
            tx.execute("DELETE FROM local_status WHERE plugin = ?1", [name])?;
            tx.execute("DELETE FROM local_revisions WHERE plugin = ?1", [name])?;
            let revoked = revoke_active(tx, name, now_ts)?;
            if removed > 0 || revoked > 0 {
                bump_changes(tx)?;
            }
            Ok(removed > 0)
        })
    }

    /// Enables or disables `name`. Returns false when it is not installed.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE local_plugins SET enabled = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, enabled, now()],
            )?;
            if changed > 0 {
                bump_changes(tx)?;
            }
            Ok(changed > 0)
        })
    }

    /// Records a grant for `plugin` (installed or not). `expires_at`, when given, must be an
    /// RFC 3339 time; it is stored as given.
    pub fn add_grant(
        &self,
        plugin: &str,
        permissions_json: &str,
        risk_score: u32,
        granted_by: &str,
        reason: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<GrantRecord> {
        let grant = NewGrant {
            plugin,
            permissions_json,
            risk_score,
            granted_by,
            reason,
            expires_at,
        };
        Ok(self.record_grant(&grant, false)?.0)
    }

    /// Revokes the grants of `plugin` active now and records one grant in their place, in
    /// one transaction: either both happen or neither does. Returns the new grant and how
    /// many were revoked.
    pub fn replace_grants(
        &self,
        plugin: &str,
        permissions_json: &str,
        risk_score: u32,
        granted_by: &str,
        reason: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<(GrantRecord, usize)> {
        let grant = NewGrant {
            plugin,
            permissions_json,
            risk_score,
            granted_by,
            reason,
            expires_at,
        };
        self.record_grant(&grant, true)
    }

    /// Records `grant` in one transaction, first revoking the plugin's active grants when
    /// `replace` is set; the new record and how many were revoked.
    fn record_grant(&self, grant: &NewGrant<'_>, replace: bool) -> Result<(GrantRecord, usize)> {
        if let Some(expires_at) = grant.expires_at {
            parse_time(expires_at)?;
        }
        let now = Timestamp::now();
        self.write(|tx| {
            let revoked = if replace {
                revoke_active(tx, grant.plugin, now)?
            } else {
                0
            };
            Ok((insert_grant(tx, grant, &format_time(now))?, revoked))
        })
    }

    /// Every grant recorded for `plugin`, revoked and expired ones included, newest first.
    pub fn grants(&self, plugin: &str) -> Result<Vec<GrantRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM local_grants WHERE plugin = ?1 ORDER BY id DESC"
            ))?;
            let rows = stmt.query_map([plugin], row_to_grant)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The grants of `plugin` that apply at `now_rfc3339`: not revoked, and without expiry
    /// or expiring after it. Times are compared as instants, whatever their offsets; a
    /// stored expiry that does not parse counts as expired. Newest first.
    pub fn active_grants(&self, plugin: &str, now_rfc3339: &str) -> Result<Vec<GrantRecord>> {
        let now = parse_time(now_rfc3339)?;
        let mut grants = self.grants(plugin)?;
        grants.retain(|g| is_active(g, now));
        Ok(grants)
    }

    /// Revokes the grants of `plugin` that are active now; returns how many.
    pub fn revoke_grants(&self, plugin: &str) -> Result<usize> {
        let now_ts = Timestamp::now();
        self.write(|tx| {
            let revoked = revoke_active(tx, plugin, now_ts)?;
            if revoked > 0 {
                bump_changes(tx)?;
            }
            Ok(revoked)
        })
    }

    /// The number the next revision of `plugin` gets: one more than the largest ever
    /// recorded for it, including revisions deleted by [`Store::remove_plugin`]. Reading it
    /// reserves nothing; [`Store::insert_revision`] refuses a number already used.
    pub fn next_revision(&self, plugin: &str) -> Result<u64> {
        self.read(|conn| {
            let last = last_revision(conn, plugin)?;
            last.checked_add(1).ok_or(Error::OutOfRange {
                what: "revision",
                value: last,
            })
        })
    }

    /// Records a new revision. Fails with [`Error::RevisionTaken`] unless `rec.revision` is
    /// larger than every revision ever recorded for the plugin.
    pub fn insert_revision(&self, rec: &RevisionRecord) -> Result<()> {
        let revision = to_i64("revision", rec.revision)?;
        self.write(|tx| {
            if rec.revision <= last_revision(tx, &rec.plugin)? {
                return Err(Error::RevisionTaken {
                    plugin: rec.plugin.clone(),
                    revision: rec.revision,
                });
            }
            tx.execute(
                &format!(
                    "INSERT INTO local_revisions ({REVISION_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    rec.plugin,
                    revision,
                    rec.image,
                    rec.manifest_sha256,
                    rec.state,
                    rec.reason,
                    rec.container_id,
                    rec.endpoint,
                    rec.created_at,
                    rec.ready_at,
                    rec.image_digest,
                    rec.signed_by,
                ],
            )?;
            tx.execute(
                "INSERT INTO local_revision_counters (plugin, last_revision) VALUES (?1, ?2)
                 ON CONFLICT (plugin) DO UPDATE
                 SET last_revision = MAX(last_revision, excluded.last_revision)",
                params![rec.plugin, revision],
            )?;
            Ok(())
        })
    }

    /// Moves a revision to `state` with `reason` (`None` clears the reason). A
    /// `container_id` or `endpoint` of `None` keeps the one recorded. When the state becomes
    /// `Ready`, `ready_at` is set to now. Fails with [`Error::RevisionNotFound`] when the
    /// revision is not recorded.
    pub fn update_revision(
        &self,
        plugin: &str,
        revision: u64,
        state: &str,
        reason: Option<&str>,
        container_id: Option<&str>,
        endpoint: Option<&str>,
    ) -> Result<()> {
        let number = to_i64("revision", revision)?;
        self.read(|conn| {
            let changed = conn.execute(
                "UPDATE local_revisions SET
                 ready_at = CASE
                     WHEN ?3 = 'Ready' AND (state <> 'Ready' OR ready_at IS NULL) THEN ?7
                     ELSE ready_at
                 END,
                 state = ?3,
                 reason = ?4,
                 container_id = COALESCE(?5, container_id),
                 endpoint = COALESCE(?6, endpoint)
             WHERE plugin = ?1 AND revision = ?2",
                params![plugin, number, state, reason, container_id, endpoint, now()],
            )?;
            if changed == 0 {
                return Err(Error::RevisionNotFound {
                    plugin: plugin.to_owned(),
                    revision,
                });
            }
            Ok(())
        })
    }

    /// The recorded revisions of `plugin`, newest first.
    pub fn revisions(&self, plugin: &str) -> Result<Vec<RevisionRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM local_revisions WHERE plugin = ?1
             ORDER BY revision DESC"
            ))?;
            let rows = stmt.query_map([plugin], row_to_revision)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Revision `revision` of `plugin`, if recorded.
    pub fn revision(&self, plugin: &str, revision: u64) -> Result<Option<RevisionRecord>> {
        let Ok(number) = i64::try_from(revision) else {
            return Ok(None);
        };
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM local_revisions WHERE plugin = ?1 AND revision = ?2"
            ))?;
            Ok(stmt
                .query_row(params![plugin, number], row_to_revision)
                .optional()?)
        })
    }

    /// Records what was observed about a plugin, replacing what was recorded before.
    pub fn set_status(&self, status: &PluginStatusRecord) -> Result<()> {
        let serving = status
            .serving_revision
            .map(|r| to_i64("revision", r))
            .transpose()?;
        self.read(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO local_status ({STATUS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (plugin) DO UPDATE SET
                     phase = excluded.phase,
                     reason = excluded.reason,
                     serving_revision = excluded.serving_revision,
                     restarts = excluded.restarts,
                     updated_at = excluded.updated_at"
                ),
                params![
                    status.plugin,
                    status.phase,
                    status.reason,
                    serving,
                    status.restarts,
                    status.updated_at,
                ],
            )?;
            Ok(())
        })
    }

    /// What was last observed about `plugin`, if anything.
    pub fn status(&self, plugin: &str) -> Result<Option<PluginStatusRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {STATUS_COLUMNS} FROM local_status WHERE plugin = ?1"
            ))?;
            Ok(stmt.query_row([plugin], row_to_status).optional()?)
        })
    }

    /// What was last observed about every plugin, ordered by plugin name.
    pub fn statuses(&self) -> Result<Vec<PluginStatusRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {STATUS_COLUMNS} FROM local_status ORDER BY plugin"
            ))?;
            let rows = stmt.query_map([], row_to_status)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Sets a local-mode setting (the gateway's URL, ports, the supervisor's pid, …).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.read(|conn| {
            conn.execute(
                "INSERT INTO local_settings (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET
                 value = excluded.value,
                 updated_at = excluded.updated_at",
                params![key, value, now()],
            )?;
            Ok(())
        })
    }

    /// A local-mode setting, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT value FROM local_settings WHERE key = ?1")?;
            Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
        })
    }

    /// Removes a local-mode setting (nothing happens when it is not set).
    pub fn delete_setting(&self, key: &str) -> Result<()> {
        self.read(|conn| {
            conn.execute("DELETE FROM local_settings WHERE key = ?1", [key])?;
            Ok(())
        })
    }

    /// SQLite's `PRAGMA data_version` for this store's connection: it changes when another
    /// connection (another process, or another [`Store`] on the same file) commits, and not
    /// on this store's own writes. Cheap enough to poll.
    pub fn data_version(&self) -> Result<u64> {
        self.read(|conn| {
            let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
            Ok(version.max(0) as u64)
        })
    }

    /// A counter that every desired-state write of this module (installing, updating,
    /// removing, enabling or disabling a plugin; adding or revoking grants) increases in the
    /// same transaction, whichever process made it. Revisions, statuses and settings do not
    /// move it.
    pub fn change_counter(&self) -> Result<u64> {
        self.read(|conn| {
            let counter: Option<i64> = conn
                .query_row(
                    "SELECT counter FROM local_changes WHERE singleton = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(counter.unwrap_or(0).max(0) as u64)
        })
    }
}

/// The current time as stored.
fn now() -> String {
    format_time(Timestamp::now())
}

/// Parses an RFC 3339 time.
fn parse_time(value: &str) -> Result<Timestamp> {
    value.parse().map_err(|source| Error::InvalidTime {
        value: value.to_owned(),
        source,
    })
}

/// `value` as an SQLite integer.
fn to_i64(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// True when `grant` applies at `now`.
fn is_active(grant: &GrantRecord, now: Timestamp) -> bool {
    grant.revoked_at.is_none()
        && grant
            .expires_at
            .as_deref()
            .is_none_or(|e| e.parse::<Timestamp>().is_ok_and(|expiry| expiry > now))
}

/// Increases the desired-state change counter.
fn bump_changes(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO local_changes (singleton, counter) VALUES (1, 1)
         ON CONFLICT (singleton) DO UPDATE SET counter = counter + 1",
        [],
    )?;
    Ok(())
}

/// Sets `revoked_at` on the grants of `plugin` active at `now`; returns how many.
fn revoke_active(tx: &Transaction<'_>, plugin: &str, now: Timestamp) -> Result<usize> {
    let active: Vec<i64> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM local_grants
             WHERE plugin = ?1 AND revoked_at IS NULL"
        ))?;
        let grants = stmt
            .query_map([plugin], row_to_grant)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        grants
            .into_iter()
            .filter(|g| is_active(g, now))
            .map(|g| g.id)
            .collect()
    };
    let stamp = format_time(now);
    let mut update = tx.prepare_cached("UPDATE local_grants SET revoked_at = ?2 WHERE id = ?1")?;
    for id in &active {
        update.execute(params![id, stamp])?;
    }
    Ok(active.len())
}

/// The largest revision ever recorded for `plugin` (0 when none).
fn last_revision(conn: &rusqlite::Connection, plugin: &str) -> Result<u64> {
    let last: i64 = conn.query_row(
        "SELECT MAX(
             COALESCE((SELECT last_revision FROM local_revision_counters WHERE plugin = ?1), 0),
             COALESCE((SELECT MAX(revision) FROM local_revisions WHERE plugin = ?1), 0)
         )",
        [plugin],
        |r| r.get(0),
    )?;
    Ok(last.max(0) as u64)
}

/// Column `idx` as an unsigned number.
fn get_u64(r: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    to_u64(idx, r.get(idx)?)
}

fn to_u64(idx: usize, value: i64) -> rusqlite::Result<u64> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

fn row_to_plugin(r: &Row<'_>) -> rusqlite::Result<InstalledPlugin> {
    Ok(InstalledPlugin {
        name: r.get(0)?,
        manifest_yaml: r.get(1)?,
        source: r.get(2)?,
        enabled: r.get(3)?,
        token: r.get(4)?,
        installed_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn row_to_grant(r: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        id: r.get(0)?,
        plugin: r.get(1)?,
        permissions_json: r.get(2)?,
        risk_score: r.get(3)?,
        granted_by: r.get(4)?,
        reason: r.get(5)?,
        granted_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

fn row_to_revision(r: &Row<'_>) -> rusqlite::Result<RevisionRecord> {
    Ok(RevisionRecord {
        plugin: r.get(0)?,
        revision: get_u64(r, 1)?,
        image: r.get(2)?,
        manifest_sha256: r.get(3)?,
        state: r.get(4)?,
        reason: r.get(5)?,
        container_id: r.get(6)?,
        endpoint: r.get(7)?,
        created_at: r.get(8)?,
        ready_at: r.get(9)?,
        image_digest: r.get(10)?,
        signed_by: r.get(11)?,
    })
}

fn row_to_status(r: &Row<'_>) -> rusqlite::Result<PluginStatusRecord> {
    Ok(PluginStatusRecord {
        plugin: r.get(0)?,
        phase: r.get(1)?,
        reason: r.get(2)?,
        serving_revision: r
            .get::<_, Option<i64>>(3)?
            .map(|v| to_u64(3, v))
            .transpose()?,
        restarts: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// A grant to record: what `grant` and `replace_grants` take.
struct NewGrant<'a> {
    plugin: &'a str,
    permissions_json: &'a str,
    risk_score: u32,
    granted_by: &'a str,
    reason: Option<&'a str>,
    expires_at: Option<&'a str>,
}

/// Inserts `grant`, granted at `granted_at`, notes the change, and reads it back.
fn insert_grant(
    tx: &Transaction<'_>,
    grant: &NewGrant<'_>,
    granted_at: &str,
) -> Result<GrantRecord> {
    tx.execute(
        "INSERT INTO local_grants
         (plugin, permissions_json, risk_score, granted_by, reason, granted_at,
          expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
        params![
            grant.plugin,
            grant.permissions_json,
            grant.risk_score,
            grant.granted_by,
            grant.reason,
            granted_at,
            grant.expires_at
        ],
    )?;
    let id = tx.last_insert_rowid();
    bump_changes(tx)?;
    Ok(tx.query_row(
        &format!("SELECT {GRANT_COLUMNS} FROM local_grants WHERE id = ?1"),
        [id],
        row_to_grant,
    )?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::TempDir;
    use crate::audit::{AuditEvent, types};

    fn revision(plugin: &str, revision: u64) -> RevisionRecord {
        RevisionRecord {
            plugin: plugin.into(),
            revision,
            image: format!("registry.local/{plugin}:{revision}"),
            manifest_sha256: "ab".repeat(32),
            state: "Starting".into(),
            reason: None,
            container_id: None,
            endpoint: None,
            created_at: now(),
            ready_at: None,
            image_digest: None,
            signed_by: None,
        }
    }

    fn status(plugin: &str, phase: &str) -> PluginStatusRecord {
        PluginStatusRecord {
            plugin: plugin.into(),
            phase: phase.into(),
            reason: None,
            serving_revision: Some(1),
            restarts: 0,
            updated_at: now(),
        }
    }

    #[test]
    fn upsert_keeps_token_enabled_and_installation_time() {
        let store = Store::open_in_memory().unwrap();
        let first = store
            .upsert_plugin("calc", "kind: Plugin\n", Some("calc.yaml"))
            .unwrap();
        assert!(first.enabled);
        assert_eq!(first.token.len(), 64);
        assert!(first.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(first.installed_at, first.updated_at);
        assert!(store.set_enabled("calc", false).unwrap());

        let second = store
            .upsert_plugin("calc", "kind: Plugin\nv: 2\n", None)
            .unwrap();
        assert_eq!(second.token, first.token);
        assert!(!second.enabled);
        assert_eq!(second.installed_at, first.installed_at);
        assert_eq!(second.manifest_yaml, "kind: Plugin\nv: 2\n");
        assert_eq!(second.source, None);
        assert_eq!(store.plugin("calc").unwrap(), Some(second));

        let other = store.upsert_plugin("echo", "kind: Plugin\n", None).unwrap();
        assert_ne!(other.token, first.token);
        let names: Vec<_> = store
            .plugins()
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["calc", "echo"]);
        assert_eq!(store.plugin("missing").unwrap(), None);
        assert!(!store.set_enabled("missing", true).unwrap());
    }

    #[test]
    fn remove_cascades_in_one_go() {
        let store = Store::open_in_memory().unwrap();
        for name in ["calc", "echo"] {
            store.upsert_plugin(name, "kind: Plugin\n", None).unwrap();
            store
                .add_grant(name, "{}", 10, "alice", None, None)
                .unwrap();
            store.insert_revision(&revision(name, 1)).unwrap();
            store.set_status(&status(name, "Running")).unwrap();
        }

        assert!(store.remove_plugin("calc").unwrap());
        assert_eq!(store.plugin("calc").unwrap(), None);
        assert_eq!(store.status("calc").unwrap(), None);
        assert!(store.revisions("calc").unwrap().is_empty());
        let grants = store.grants("calc").unwrap();
        assert_eq!(grants.len(), 1);
        assert!(grants[0].revoked_at.is_some());
        assert!(store.active_grants("calc", &now()).unwrap().is_empty());

        // The other plugin is untouched.
        assert!(store.plugin("echo").unwrap().is_some());
        assert!(store.status("echo").unwrap().is_some());
        assert_eq!(store.revisions("echo").unwrap().len(), 1);
        assert_eq!(store.active_grants("echo", &now()).unwrap().len(), 1);

        assert!(!store.remove_plugin("calc").unwrap());
    }

    #[test]
    fn revision_numbers_are_never_reused() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        assert_eq!(store.next_revision("calc").unwrap(), 1);
        store.insert_revision(&revision("calc", 1)).unwrap();
        assert_eq!(store.next_revision("calc").unwrap(), 2);
        store.insert_revision(&revision("calc", 2)).unwrap();
        assert_eq!(store.next_revision("calc").unwrap(), 3);
        assert!(matches!(
            store.insert_revision(&revision("calc", 2)),
            Err(Error::RevisionTaken { revision: 2, .. })
        ));

        store.remove_plugin("calc").unwrap();
        store.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        assert!(store.revisions("calc").unwrap().is_empty());
        assert_eq!(store.next_revision("calc").unwrap(), 3);
        assert!(matches!(
            store.insert_revision(&revision("calc", 1)),
            Err(Error::RevisionTaken { revision: 1, .. })
        ));
        store.insert_revision(&revision("calc", 3)).unwrap();
        assert_eq!(store.next_revision("calc").unwrap(), 4);
        // Counters are per plugin.
        assert_eq!(store.next_revision("echo").unwrap(), 1);
    }

    #[test]
    fn revisions_move_through_their_states() {
        let store = Store::open_in_memory().unwrap();
        store.insert_revision(&revision("calc", 1)).unwrap();
        store.insert_revision(&revision("calc", 2)).unwrap();
        store
            .update_revision("calc", 1, "Starting", Some("pulling"), Some("c1"), None)
            .unwrap();
        let starting = store.revision("calc", 1).unwrap().unwrap();
        assert_eq!(starting.reason.as_deref(), Some("pulling"));
        assert_eq!(starting.container_id.as_deref(), Some("c1"));
        assert_eq!(starting.ready_at, None);

        store
            .update_revision("calc", 1, "Ready", None, None, Some("http://10.0.0.2:8080"))
            .unwrap();
        let ready = store.revision("calc", 1).unwrap().unwrap();
        assert_eq!(ready.state, "Ready");
        assert_eq!(ready.reason, None);
        assert_eq!(ready.container_id.as_deref(), Some("c1"));
        assert_eq!(ready.endpoint.as_deref(), Some("http://10.0.0.2:8080"));
        let ready_at = ready.ready_at.clone().unwrap();
        assert!(ready_at.parse::<Timestamp>().is_ok());

        store
            .update_revision("calc", 1, "Retired", Some("replaced by 2"), None, None)
            .unwrap();
        let retired = store.revision("calc", 1).unwrap().unwrap();
        assert_eq!(retired.ready_at, Some(ready_at));
        assert_eq!(retired.container_id.as_deref(), Some("c1"));

        let numbers: Vec<_> = store
            .revisions("calc")
            .unwrap()
            .into_iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(numbers, [2, 1]);
        assert_eq!(store.revision("calc", 9).unwrap(), None);
        assert_eq!(store.revision("calc", u64::MAX).unwrap(), None);
        assert!(matches!(
            store.update_revision("calc", 9, "Ready", None, None, None),
            Err(Error::RevisionNotFound { revision: 9, .. })
        ));
    }

    #[test]
    fn active_grants_compare_expiry_as_time() {
        let store = Store::open_in_memory().unwrap();
        let now = "2025-12-31T23:30:00Z";
        // 2025-12-31T23:00:00Z: expired, though it sorts after `now` as text.
        let expired = store
            .add_grant(
                "calc",
                "{\"a\":1}",
                5,
                "alice",
                None,
                Some("2026-01-01T00:00:00+01:00"),
            )
            .unwrap();
        // 2026-01-01T00:30:00Z: active, though it sorts before `now` as text.
        let later = store
            .add_grant(
                "calc",
                "{\"b\":2}",
                5,
                "alice",
                None,
                Some("2025-12-31T23:30:00-01:00"),
            )
            .unwrap();
        // Exactly now: no longer applies.
        store
            .add_grant("calc", "{}", 5, "alice", None, Some(now))
            .unwrap();
        let forever = store
            .add_grant("calc", "{\"c\":3}", 40, "bob", Some("needed"), None)
            .unwrap();
        assert_eq!(forever.reason.as_deref(), Some("needed"));
        assert_eq!(forever.risk_score, 40);
        store
            .add_grant("echo", "{}", 5, "alice", None, None)
            .unwrap();

        let active: Vec<_> = store
            .active_grants("calc", now)
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        assert_eq!(active, [forever.id, later.id]);
        assert!(!active.contains(&expired.id));
        assert_eq!(store.grants("calc").unwrap().len(), 4);
        assert_eq!(store.grants("calc").unwrap()[0].id, forever.id);

        assert!(matches!(
            store.active_grants("calc", "yesterday"),
            Err(Error::InvalidTime { .. })
        ));
        assert!(matches!(
            store.add_grant("calc", "{}", 5, "alice", None, Some("tomorrow")),
            Err(Error::InvalidTime { .. })
        ));
    }

    #[test]
    fn revoking_touches_only_active_grants() {
        let store = Store::open_in_memory().unwrap();
        let expired = store
            .add_grant("calc", "{}", 5, "alice", None, Some("2000-01-01T00:00:00Z"))
            .unwrap();
        store
            .add_grant("calc", "{}", 5, "alice", None, None)
            .unwrap();
        store
            .add_grant("calc", "{}", 5, "alice", None, Some("2999-01-01T00:00:00Z"))
            .unwrap();
        store
            .add_grant("echo", "{}", 5, "alice", None, None)
            .unwrap();

        assert_eq!(store.revoke_grants("calc").unwrap(), 2);
        assert_eq!(store.revoke_grants("calc").unwrap(), 0);
        assert!(store.active_grants("calc", &now()).unwrap().is_empty());
        let grants = store.grants("calc").unwrap();
        let untouched = grants.iter().find(|g| g.id == expired.id).unwrap();
        assert_eq!(untouched.revoked_at, None);
        assert_eq!(store.active_grants("echo", &now()).unwrap().len(), 1);
    }

    #[test]
    fn statuses_and_settings_upsert() {
        let store = Store::open_in_memory().unwrap();
        store.set_status(&status("echo", "Pending")).unwrap();
        store.set_status(&status("calc", "Pending")).unwrap();
        let mut running = status("calc", "Running");
        running.restarts = 3;
        running.serving_revision = Some(7);
        running.reason = Some("healthy".into());
        store.set_status(&running).unwrap();
        assert_eq!(store.status("calc").unwrap(), Some(running));
        assert_eq!(store.status("other").unwrap(), None);
        let phases: Vec<_> = store
            .statuses()
            .unwrap()
            .into_iter()
            .map(|s| (s.plugin, s.phase))
            .collect();
        assert_eq!(
            phases,
            [
                ("calc".to_owned(), "Running".to_owned()),
                ("echo".to_owned(), "Pending".to_owned())
            ]
        );

        assert_eq!(store.setting("gateway_url").unwrap(), None);
        store
            .set_setting("gateway_url", "http://127.0.0.1:1")
            .unwrap();
        store
            .set_setting("gateway_url", "http://127.0.0.1:2")
            .unwrap();
        assert_eq!(
            store.setting("gateway_url").unwrap().as_deref(),
            Some("http://127.0.0.1:2")
        );
        store.delete_setting("gateway_url").unwrap();
        store.delete_setting("gateway_url").unwrap();
        assert_eq!(store.setting("gateway_url").unwrap(), None);
    }

    #[test]
    fn change_counter_moves_with_desired_state_only() {
        let store = Store::open_in_memory().unwrap();
        let mut last = store.change_counter().unwrap();
        assert_eq!(last, 0);
        let mut bumped = |store: &Store, expected: bool| {
            let counter = store.change_counter().unwrap();
            assert_eq!(counter > last, expected, "{last} -> {counter}");
            assert!(counter <= last + 1);
            last = counter;
        };

        store.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        bumped(&store, true);
        store.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        bumped(&store, true);
        store.set_enabled("calc", false).unwrap();
        bumped(&store, true);
        store.set_enabled("missing", false).unwrap();
        bumped(&store, false);
        store
            .add_grant("calc", "{}", 1, "alice", None, None)
            .unwrap();
        bumped(&store, true);
        store.revoke_grants("calc").unwrap();
        bumped(&store, true);
        store.revoke_grants("calc").unwrap();
        bumped(&store, false);
        store.insert_revision(&revision("calc", 1)).unwrap();
        store
            .update_revision("calc", 1, "Ready", None, None, None)
            .unwrap();
        store.set_status(&status("calc", "Running")).unwrap();
        store.set_setting("pid", "42").unwrap();
        bumped(&store, false);
        store.remove_plugin("calc").unwrap();
        bumped(&store, true);
        store.remove_plugin("calc").unwrap();
        bumped(&store, false);
    }

    #[test]
    fn data_version_sees_other_connections_commits() {
        let dir = TempDir::new();
        let path = dir.join("berth.db");
        let supervisor = Store::open(&path).unwrap();
        let cli = Store::open(&path).unwrap();

        let before = supervisor.data_version().unwrap();
        let counter = supervisor.change_counter().unwrap();
        supervisor.set_setting("pid", "1").unwrap();
        assert_eq!(supervisor.data_version().unwrap(), before);

        cli.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        let after = supervisor.data_version().unwrap();
        assert_ne!(after, before);
        assert_eq!(supervisor.change_counter().unwrap(), counter + 1);
        assert_eq!(supervisor.plugins().unwrap().len(), 1);
        assert_eq!(supervisor.data_version().unwrap(), after);
        assert_eq!(cli.setting("pid").unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn two_stores_write_one_file_from_threads() {
        const ROUNDS: usize = 25;
        let dir = TempDir::new();
        let path = dir.join("berth.db");
        let stores = [
            Arc::new(Store::open(&path).unwrap()),
            Arc::new(Store::open(&path).unwrap()),
        ];
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&stores[t % 2]);
                std::thread::spawn(move || -> Result<()> {
                    let plugin = format!("plugin-{t}");
                    for i in 0..ROUNDS {
                        store.append_audit(vec![
                            AuditEvent::new("tester", types::LIFECYCLE, "success")
                                .plugin(plugin.clone()),
                        ])?;
                        store.upsert_plugin(&plugin, &format!("v: {i}\n"), None)?;
                        store.add_grant(&plugin, "{}", 1, "tester", None, None)?;
                        let next = store.next_revision(&plugin)?;
                        store.insert_revision(&revision(&plugin, next))?;
                        store.set_status(&status(&plugin, "Running"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        let report = stores[1].verify_audit().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 4 * ROUNDS as u64);
        assert_eq!(stores[0].plugins().unwrap().len(), 4);
        assert_eq!(stores[0].change_counter().unwrap(), 4 * 2 * ROUNDS as u64);
        assert_eq!(
            stores[1].next_revision("plugin-3").unwrap(),
            ROUNDS as u64 + 1
        );
    }
}
