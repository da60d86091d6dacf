//! crds/ is generated from the Rust types, and the API server accepts it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::support::{TestNamespace, plane, repo_root};

#[test]
fn crds_directory_matches_the_code() {
    let dir = repo_root().join("crds");
    let mut expected_files = vec![];
    for crd in reprise::api::crds() {
        let name = reprise::api::crd_file_name(&crd);
        let expected = reprise::api::crd_yaml(&crd).expect("yaml");
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name}: {e}; run `cargo run -- crds --out-dir crds`"));
        assert!(
            on_disk == expected,
            "crds/{name} differs from the code; run `cargo run -- crds --out-dir crds`"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "crds/ holds files the code does not generate");
}

#[tokio::test]
async fn every_crd_is_established_with_a_structural_schema() {
    let p = plane();
    let api: Api<CustomResourceDefinition> = Api::all(p.client().await);
    for crd in reprise::api::crds() {
        let name = crd.metadata.name.clone().expect("name");
        let live = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name} is not installed: {e}"));
        let conds = live.status.and_then(|s| s.conditions).unwrap_or_default();
        let is = |t: &str| conds.iter().any(|c| c.type_ == t && c.status == "True");
        assert!(is("Established"), "{name} is not Established: {conds:?}");
        assert!(
            !is("NonStructuralSchema"),
            "{name} has a non-structural schema: {conds:?}"
        );
    }
}

#[test]
fn every_example_applies_to_the_api_server() {
    let examples = repo_root().join("examples");
    let mut files = vec![];
    let mut dirs = vec![examples];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("examples/") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "examples/ holds no manifest");
    let ns = TestNamespace::new("examples");
    for f in &files {
        let (ok, out) = plane().k_stdin(
            &["apply", "-n", &ns.name, "-f", "-"],
            &std::fs::read_to_string(f).expect("read"),
        );
        assert!(ok, "{} is rejected:\n{out}", f.display());
    }
    println!("{} example files applied", files.len());
}

#[test]
fn api_reference_matches_the_code() {
    let on_disk = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("docs/api.md");
    assert!(
        on_disk == reprise::docs::api_reference(),
        "docs/api.md differs from the CRDs; run `cargo run -- docs > docs/api.md`"
    );
}
