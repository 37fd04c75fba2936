//! Manifest files: any bytes are read as a multi-document YAML file, parsed into `Plugin`
//! and `PluginGrant` objects and validated. Every failure must be a `Problem`, never a
//! panic; what loads must also assess and serialize.
#![no_main]

use berth_api::{Manifest, assess, load_manifests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let loaded = load_manifests("fuzz.yaml", data);
    for document in &loaded.documents {
        let _ = document.manifest.object();
        if let Manifest::Plugin(plugin) = &document.manifest {
            let _ = assess(&plugin.spec.permissions, &plugin.spec.hooks);
            let _ = plugin.spec.resources.resolve();
        }
    }
    for problem in &loaded.problems {
        let _ = problem.to_string();
    }
});
