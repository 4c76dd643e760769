//! Authorisation: a rule's access requirement against verified claims
//! (DESIGN.md step 3).
//!
//! Pure decision; it never sees headers or tokens, only [`Claims`] that
//! `auth` has already verified.

use crate::auth::Claims;

/// Who a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a token, if sent, is ignored.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token carrying at least one of these roles.
    Roles(Vec<String>),
}

impl Access {
    pub fn is_public(&self) -> bool {
        matches!(self, Access::Public)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// The rule needs a token and none was verified.
    #[error("authentication required")]
    Unauthenticated,
    #[error("insufficient role")]
    Forbidden,
}

/// Decides whether `claims` may use a rule with `access`.
pub fn authorize(access: &Access, claims: Option<&Claims>) -> Result<(), AuthzError> {
    match (access, claims) {
        (Access::Public, _) => Ok(()),
        (_, None) => Err(AuthzError::Unauthenticated),
        (Access::Authenticated, Some(_)) => Ok(()),
        (Access::Roles(allowed), Some(claims)) => {
            if claims.roles.iter().any(|r| allowed.contains(r)) {
                Ok(())
            } else {
                Err(AuthzError::Forbidden)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: &[&str]) -> Claims {
        Claims {
            subject: "u1".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            jti: None,
            ..Claims::default()
        }
    }

    #[test]
    fn public_admits_everyone() {
        assert_eq!(authorize(&Access::Public, None), Ok(()));
        assert_eq!(authorize(&Access::Public, Some(&claims(&[]))), Ok(()));
    }

    #[test]
    fn authenticated_needs_claims_but_no_role() {
        assert_eq!(
            authorize(&Access::Authenticated, None),
            Err(AuthzError::Unauthenticated)
        );
        assert_eq!(authorize(&Access::Authenticated, Some(&claims(&[]))), Ok(()));
    }

    #[test]
    fn roles_need_one_matching_role() {
        let admin_only = Access::Roles(vec!["admin".into()]);
        assert_eq!(authorize(&admin_only, None), Err(AuthzError::Unauthenticated));
        assert_eq!(
            authorize(&admin_only, Some(&claims(&["user"]))),
            Err(AuthzError::Forbidden)
        );
        assert_eq!(authorize(&admin_only, Some(&claims(&["user", "admin"]))), Ok(()));
        assert_eq!(
            authorize(&admin_only, Some(&claims(&["Admin"]))),
            Err(AuthzError::Forbidden),
            "case-sensitive"
        );
    }
}
