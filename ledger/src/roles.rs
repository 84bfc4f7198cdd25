//! Actors and roles: who may emit which kind of event (spec/roles.md). The registry
//! is built only from the log's own entries: the admin key from entry 0, actors from
//! `actor.register` / `actor.revoke` events signed by an admin.

use crate::error::{Code, LedgerError, Result};
use crate::event::Kind;
use crate::types::{Index, KeyId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers and revokes actors.
    Admin,
    /// A rights holder: rights, scans, detections, notices, legal actions, withdrawals.
    Brand,
    /// An agent or investigator for a brand: scans and detections.
    Investigator,
    /// A marketplace: takedown decisions, relayed counter-notices, reinstatements.
    Marketplace,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Brand,
        Role::Investigator,
        Role::Marketplace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Brand => "brand",
            Role::Investigator => "investigator",
            Role::Marketplace => "marketplace",
        }
    }

    /// The role table (spec/roles.md). `log.genesis` is emitted by the log key only.
    pub fn may_emit(self, kind: Kind) -> bool {
        use Kind::*;
        match self {
            Role::Admin => matches!(kind, ActorRegister | ActorRevoke),
            Role::Brand => matches!(
                kind,
                Right | Scan | Detection | Notice | LegalAction | Withdrawal
            ),
            Role::Investigator => matches!(kind, Scan | Detection),
            Role::Marketplace => matches!(kind, Takedown | CounterNotice | Reinstatement),
        }
    }
}

/// A registered actor as of some index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub key: KeyId,
    pub name: String,
    pub org: String,
    pub roles: Vec<Role>,
    /// Index of the entry that registered it (0 for the admin named by genesis).
    pub registered_at: Index,
    /// Index of the entry that revoked it.
    pub revoked_at: Option<Index>,
}

impl Actor {
    /// Checks that this actor may sign `kind` now.
    pub fn authorise(&self, kind: Kind) -> Result<()> {
        if let Some(at) = self.revoked_at {
            return Err(LedgerError::new(
                Code::RevokedKey,
                format!("key {} ({}) was revoked by entry {at}", self.key, self.name),
            )
            .field("signatures[0].keyid")
            .expected("a key that is registered and not revoked"));
        }
        if self.roles.iter().any(|r| r.may_emit(kind)) {
            return Ok(());
        }
        let permitted: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| r.may_emit(kind))
            .map(|r| r.as_str())
            .collect();
        Err(LedgerError::new(
            Code::RoleNotPermitted,
            format!(
                "{} ({}) has roles [{}], which may not emit {}",
                self.name,
                self.key,
                self.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kind.as_str()
            ),
        )
        .field("payload.kind")
        .expected(format!(
            "a signer with one of the roles [{}]",
            permitted.join(", ")
        )))
    }
}

pub fn unknown_key(key: &KeyId) -> LedgerError {
    LedgerError::new(
        Code::UnknownKey,
        format!("key {key} is not registered in this log"),
    )
    .field("signatures[0].keyid")
    .expected("a key registered by an admin with an actor.register event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marketplace_may_not_send_notices_and_brand_may_not_register_actors() {
        assert!(!Role::Marketplace.may_emit(Kind::Notice));
        assert!(!Role::Brand.may_emit(Kind::ActorRegister));
        assert!(Role::Brand.may_emit(Kind::Notice));
        for r in Role::ALL {
            assert!(!r.may_emit(Kind::Genesis), "{r:?}");
        }
    }
}
