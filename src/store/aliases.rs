//! Aliases: names that point at model ids (`default` is the first), so that clients never
//! need to learn a new model id when the model behind a name changes. Both model stores keep
//! them beside the models, together with the bundled models they have installed once (so a
//! bundled model the user deleted is not installed again at the next start).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{valid_id, Result, StoreError};

/// What the embedded store keeps in `DIR/aliases.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasBook {
    /// Alias name → model id.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Ids of the bundled models installed here at some start.
    #[serde(default)]
    pub installed: BTreeSet<String>,
}

/// Checks an alias name: the rules of ids (1–64 characters of `[A-Za-z0-9_-]`).
pub fn check_alias_name(name: &str) -> Result<()> {
    if valid_id(name) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "alias {name:?}: names are 1-64 characters of letters, digits, '-' and '_'"
        )))
    }
}

impl AliasBook {
    /// Points `name` at `id`; returns whether anything changed.
    pub fn set(&mut self, name: &str, id: &str) -> bool {
        self.aliases
            .insert(name.to_string(), id.to_string())
            .as_deref()
            != Some(id)
    }

    /// Drops every alias that points at `id` (the model is being deleted); returns whether
    /// any did.
    pub fn forget_model(&mut self, id: &str) -> bool {
        let before = self.aliases.len();
        self.aliases.retain(|_, target| target != id);
        self.aliases.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_an_alias_replaces_its_target_and_deleting_a_model_drops_its_aliases() {
        let mut book = AliasBook::default();
        assert!(book.set("default", "m1"));
        assert!(!book.set("default", "m1"));
        assert!(book.set("prod", "m1"));
        assert!(book.set("default", "m2"));
        assert_eq!(book.aliases["default"], "m2");
        assert!(book.forget_model("m1"));
        assert_eq!(book.aliases.keys().collect::<Vec<_>>(), ["default"]);
        assert!(!book.forget_model("m1"));
    }

    #[test]
    fn alias_names_follow_the_rules_of_ids() {
        assert!(check_alias_name("default").is_ok());
        assert!(check_alias_name("prod_v2-b").is_ok());
        for bad in ["", "../x", "a b", "é", &"x".repeat(65)] {
            assert!(matches!(check_alias_name(bad), Err(StoreError::Invalid(_))));
        }
    }
}
