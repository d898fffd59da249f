//! `barn verify-car` on a good repository CAR, a tampered one and with a
//! wrong key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use barn_repo::car::write_car;
use barn_repo::commit::build_repo;
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_repo::data;

fn write_repo(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    let key = PrivateKey::from_seed(KeyType::K256, 3);
    let did = "did:plc:clitest0000000000000001";
    let records = (0..25).map(|i| {
        let v =
            data::record_from_json(&serde_json::json!({"$type": "com.example.n", "i": i})).unwrap();
        (format!("com.example.n/{i:04}"), data::encode(&v).unwrap())
    });
    let (root, blocks) = build_repo(did, "3l2w5x7abcd22", &key, records).unwrap();
    let car = write_car(&[root], blocks.iter().map(|(c, b)| (c, b.as_ref())));
    let path = dir.join("repo.car");
    std::fs::write(&path, car).unwrap();
    (path, did.to_string(), key.public_key().to_did_key())
}

fn barn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_barn"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn verify_car_accepts_a_good_repo_and_rejects_tampering_and_wrong_keys() {
    let dir = std::env::temp_dir().join(format!("barn-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, did, key) = write_repo(&dir);
    let p = path.to_str().unwrap();

    let out = barn(&["verify-car", p, "--did", &did, "--key", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["records"], 25);
    assert_eq!(summary["signature"], "valid");

    let other = PrivateKey::from_seed(KeyType::K256, 4)
        .public_key()
        .to_did_key();
    let out = barn(&["verify-car", p, "--key", &other]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature"));

    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let out = barn(&["verify-car", p]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its hash"));
    std::fs::remove_dir_all(&dir).unwrap();
}
