//! `berth render`: the objects the operator would apply for manifests read from files.
//!
//! Uses the same approval and rendering as the controller; only the cluster is missing, so
//! dependencies are assumed Ready and nothing has been rolled out yet (revision 1).

use berth_api::{Manifest, Plugin, PluginGrant, Problem, RiskTier, load_manifests};
use jiff::Timestamp;

use crate::approval::{Approval, decide, describe_missing};
use crate::render::{RenderInput, RenderOptions, Rendered, RevisionToRun, render};

/// How `berth render` decides and renders.
#[derive(Clone, Debug)]
pub struct TemplateOptions {
    /// Cluster facts.
    pub render: RenderOptions,
    /// Plugins at or under this tier render without a grant.
    pub auto_approve: RiskTier,
    /// Render every valid plugin as if its permissions were granted.
    pub assume_granted: bool,
    /// Now, for grant expiry.
    pub now: Timestamp,
}

/// What became of one plugin.
#[derive(Clone, Debug)]
pub enum TemplateOutcome {
    /// Its objects.
    Rendered {
        /// File it came from.
        file: String,
        /// Plugin name.
        plugin: String,
        /// The objects.
        rendered: Box<Rendered>,
    },
    /// Why nothing would be applied for it.
    Skipped {
        /// File it came from.
        file: String,
        /// Plugin name.
        plugin: String,
        /// The reason, one line.
        reason: String,
    },
}

/// The result of reading and rendering a set of files.
#[derive(Clone, Debug, Default)]
pub struct Template {
    /// One outcome per Plugin, in file order.
    pub outcomes: Vec<TemplateOutcome>,
    /// Problems reading the files (invalid documents are skipped, not rendered).
    pub problems: Vec<Problem>,
}

impl Template {
    /// True when every plugin was rendered and no document had an error.
    pub fn is_complete(&self) -> bool {
        !self.problems.iter().any(Problem::is_error)
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o, TemplateOutcome::Rendered { .. }))
    }

    /// Every rendered object as one YAML stream, each headed by a `# Source:` comment like
    /// `helm template` prints.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for outcome in &self.outcomes {
            if let TemplateOutcome::Rendered {
                file,
                plugin,
                rendered,
            } = outcome
            {
                for value in rendered.to_values() {
                    let kind = value["kind"].as_str().unwrap_or_default();
                    out.push_str(&format!("---\n# Source: {file} (Plugin/{plugin}) {kind}\n"));
                    out.push_str(&serde_yaml::to_string(&value).expect("objects serialize"));
                }
            }
        }
        out
    }
}

/// Reads `(file name, bytes)` pairs and renders every valid Plugin among them, with the
/// PluginGrants found among them.
pub fn template(files: &[(String, Vec<u8>)], options: &TemplateOptions) -> Template {
    let mut plugins: Vec<(String, Plugin)> = Vec::new();
    let mut grants: Vec<PluginGrant> = Vec::new();
    let mut problems = Vec::new();
    for (file, bytes) in files {
        let loaded = load_manifests(file, bytes);
        problems.extend(loaded.problems);
        for doc in loaded.documents {
            match doc.manifest {
                Manifest::Plugin(p) => plugins.push((file.clone(), *p)),
                Manifest::Grant(g) => grants.push(*g),
            }
        }
    }
    let namespace = |ns: &Option<String>| {
        ns.clone()
            .unwrap_or(options.render.default_namespace.clone())
    };
    let outcomes = plugins
        .into_iter()
        .map(|(file, plugin)| {
            let name = plugin.name().to_string();
            let own: Vec<&PluginGrant> = grants
                .iter()
                .filter(|g| {
                    g.spec.plugin == name
                        && namespace(&g.metadata.namespace) == namespace(&plugin.metadata.namespace)
                })
                .collect();
            let decision = decide(
                &plugin.spec.permissions,
                &plugin.spec.hooks,
                &own,
                options.now,
                options.auto_approve,
            );
            if let Approval::NotApproved { missing, .. } = &decision.approval
                && !options.assume_granted
            {
                return TemplateOutcome::Skipped {
                    file,
                    plugin: name,
                    reason: format!(
                        "awaiting approval: risk {} ({}) is above the auto-approve tier {} and no PluginGrant given covers: {} (pass the grant's file, or --assume-granted)",
                        decision.risk.tier,
                        decision.risk.score,
                        options.auto_approve,
                        describe_missing(missing)
                    ),
                };
            }
            let revision = RevisionToRun::of_spec(&plugin, 1);
            match render(RenderInput {
                plugin: &plugin,
                granted: &plugin.spec.permissions,
                revision: &revision,
                options: &options.render,
            }) {
                Ok(rendered) => TemplateOutcome::Rendered {
                    file,
                    plugin: name,
                    rendered: Box::new(rendered),
                },
                Err(problems) => TemplateOutcome::Skipped {
                    file,
                    plugin: name,
                    reason: problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                },
            }
        })
        .collect();
    Template { outcomes, problems }
}
