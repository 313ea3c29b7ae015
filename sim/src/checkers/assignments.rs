//! The balancer hands a client a server only if that server said "yes" to
//! the probe carrying the client's auth code. The balancer's own events are
//! not taken for it: what counts is the server's `Probed` event for the same
//! code, which the balancer cannot make up.

use std::collections::{BTreeMap, BTreeSet};

/// Every code in `assigned` (labels of the codes the balancer handed out)
/// was answered "yes" by its server, as `probed` (label → available)
/// records; the violations otherwise.
pub fn check(probed: &BTreeMap<String, bool>, assigned: &BTreeSet<String>) -> Vec<String> {
    assigned
        .iter()
        .filter_map(|code| match probed.get(code) {
            Some(true) => None,
            Some(false) => Some(format!(
                "the balancer handed out code {code}, whose server answered \"no\""
            )),
            None => Some(format!(
                "the balancer handed out code {code}, which no server answered"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn only_codes_answered_yes_may_be_handed_out() {
        let probed = [("s1:aa".to_string(), true), ("s2:bb".to_string(), false)].into();
        let ok = ["s1:aa".to_string()].into();
        assert!(check(&probed, &ok).is_empty());
        let bad = ["s2:bb".to_string(), "s3:cc".to_string()].into();
        let v = check(&probed, &bad);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("answered \"no\""), "{v:?}");
        assert!(v[1].contains("no server answered"), "{v:?}");
    }
}
