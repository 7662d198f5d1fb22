//! Unit tests of `store.rs`.

use super::source::join_lexically;
use super::*;

#[test]
fn docker_tags_match_in_their_familiar_form() {
    for (a, b) in [
        ("docker.io/test/web:1.0", "test/web:1.0"),
        ("docker.io/library/web:latest", "web"),
        ("web:latest", "web"),
        ("localhost:5000/web", "localhost:5000/web:latest"),
    ] {
        assert_eq!(familiar_tag(a), familiar_tag(b), "{a} vs {b}");
    }
    for (a, b) in [
        ("test/web:1.0", "test/web:1.1"),
        ("other/web:1.0", "test/web:1.0"),
        ("localhost:5000/web", "web"),
    ] {
        assert_ne!(familiar_tag(a), familiar_tag(b), "{a} vs {b}");
    }
}

#[test]
fn symlink_targets_resolve_inside_the_archive() {
    assert_eq!(
        join_lexically("a/layer.tar", "../b/layer.tar").as_deref(),
        Some("b/layer.tar")
    );
    assert_eq!(join_lexically("a/layer.tar", "../../x"), None);
    assert_eq!(clean_name("./blobs//sha256/x"), "blobs/sha256/x");
}
