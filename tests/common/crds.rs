//! Where the tests find the CRD schemas they validate against. One place, used by every test
//! that reads CRDs, resolved in this order:
//!
//! 1. the environment: `ISTIO_CRDS` (a file) / `GATEWAY_API_CRDS` (a directory holding
//!    `gatewayclasses.yaml`, `gateways.yaml`, `httproutes.yaml`, `referencegrants.yaml`);
//! 2. `../shared/istio/crds.yaml` / `../shared/gateway-api/`, beside this repository's own
//!    checkout;
//! 3. `.tools/crds/istio/crds.yaml` / `.tools/crds/gateway-api/`, where `make crds` (a
//!    dependency of `make test`) puts the pinned upstream files it fetched
//!    (`scripts/fetch-crds.sh`, sha256-checked).
//!
//! Nothing found: the test panics with one line that says what to set.

use std::path::{Path, PathBuf};

/// The one line printed when the Istio CRDs are nowhere (the same advice as `make crds`).
pub const ISTIO_CRDS_MISSING: &str = "Istio CRDs not found (ISTIO_CRDS unset, no ../shared/istio/crds.yaml, no .tools/crds/istio/crds.yaml): set ISTIO_CRDS=/path/to/crds.yaml (the networking.istio.io VirtualService, DestinationRule and Gateway CRDs) or run `make crds` with network access";

/// The one line printed when the Gateway API CRDs are nowhere.
pub const GATEWAY_API_CRDS_MISSING: &str = "Gateway API CRDs not found (GATEWAY_API_CRDS unset, no ../shared/gateway-api/, no .tools/crds/gateway-api/): set GATEWAY_API_CRDS=/path/to/dir (gatewayclasses.yaml, gateways.yaml, httproutes.yaml, referencegrants.yaml of gateway-api v1.6.1 config/crd/standard) or run `make crds` with network access";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The value of `var` when set and not empty.
fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The resolution rule, apart from the real environment and paths (so it can be tested): the
/// variable's value when set (it must pass `usable`), else the first usable candidate, else
/// `missing`.
pub fn resolve(
    var: &str,
    from_env: Option<PathBuf>,
    candidates: &[PathBuf],
    usable: impl Fn(&Path) -> bool,
    missing: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = from_env {
        return if usable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{var}={} is not usable (missing file or directory); {}",
                path.display(),
                missing
                    .split_once(": ")
                    .map_or(missing, |(_, advice)| advice)
            ))
        };
    }
    candidates
        .iter()
        .find(|p| usable(p))
        .cloned()
        .ok_or_else(|| missing.to_string())
}

/// `ISTIO_CRDS`, else `../shared/istio/crds.yaml`, else `.tools/crds/istio/crds.yaml`.
pub fn istio_crds_path() -> PathBuf {
    resolve(
        "ISTIO_CRDS",
        from_env("ISTIO_CRDS"),
        &[
            manifest_dir().join("../shared/istio/crds.yaml"),
            manifest_dir().join(".tools/crds/istio/crds.yaml"),
        ],
        Path::is_file,
        ISTIO_CRDS_MISSING,
    )
    .unwrap_or_else(|line| panic!("{line}"))
}

/// `GATEWAY_API_CRDS`, else `../shared/gateway-api/`, else `.tools/crds/gateway-api/`.
pub fn gateway_api_crds_dir() -> PathBuf {
    resolve(
        "GATEWAY_API_CRDS",
        from_env("GATEWAY_API_CRDS"),
        &[
            manifest_dir().join("../shared/gateway-api"),
            manifest_dir().join(".tools/crds/gateway-api"),
        ],
        |d| d.join("httproutes.yaml").is_file(),
        GATEWAY_API_CRDS_MISSING,
    )
    .unwrap_or_else(|line| panic!("{line}"))
}
