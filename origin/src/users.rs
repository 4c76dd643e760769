//! User persistence in MongoDB.
//!
//! Owns the `users` collection: its document shape, its indexes and every
//! query against it. Uniqueness of email and username is decided by unique
//! indexes, never by a check-then-insert (two concurrent registrations would
//! both pass the check). Knows nothing of HTTP beyond returning [`ApiError`].

use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{FindOneAndUpdateOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// MongoDB's code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;

pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";

/// A user as stored. The hash stays in this module and in `routes::login`;
/// everything sent to a client goes through [`User`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub username: String,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: DateTime,
}

/// A user as clients see it: never the hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub role: String,
    pub created_at: String,
}

impl From<UserDoc> for User {
    fn from(doc: UserDoc) -> User {
        User {
            id: doc.id.to_hex(),
            username: doc.username,
            email: doc.email,
            role: doc.role,
            created_at: doc
                .created_at
                .try_to_rfc3339_string()
                .unwrap_or_else(|_| doc.created_at.timestamp_millis().to_string()),
        }
    }
}

/// Fields of a new user, already validated; `email` is lower-cased.
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub role: &'static str,
    pub password_hash: String,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub password_hash: Option<String>,
}

/// One page of the user list.
pub struct Page {
    pub users: Vec<User>,
    pub total: u64,
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDoc>,
}

impl UserStore {
    pub fn new(db: &Database) -> UserStore {
        UserStore {
            users: db.collection("users"),
        }
    }

    /// Creates the unique indexes uniqueness depends on, and the index the
    /// list order uses. Idempotent; run at every start-up.
    pub async fn ensure_indexes(&self) -> Result<(), mongodb::error::Error> {
        let unique = |field: &str| {
            IndexModel::builder()
                .keys(doc! { field: 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name(format!("{field}_unique"))
                        .build(),
                )
                .build()
        };
        let order = IndexModel::builder()
            .keys(doc! { "created_at": 1, "_id": 1 })
            .options(IndexOptions::builder().name("created_at_id".to_string()).build())
            .build();
        // Only the missing ones: FerretDB 1.24 drops the connection when
        // `createIndexes` names an index that already exists.
        let existing = self.users.list_index_names().await.unwrap_or_default();
        let missing: Vec<IndexModel> = [unique("email"), unique("username"), order]
            .into_iter()
            .filter(|index| {
                let name = index
                    .options
                    .as_ref()
                    .and_then(|o| o.name.as_deref())
                    .unwrap_or_default();
                !existing.iter().any(|e| e == name)
            })
            .collect();
        if !missing.is_empty() {
            self.users.create_indexes(missing).await?;
        }
        Ok(())
    }

    pub async fn insert(&self, new: NewUser) -> Result<User, ApiError> {
        let doc = UserDoc {
            id: ObjectId::new(),
            username: new.username,
            email: new.email,
            role: new.role.to_owned(),
            password_hash: new.password_hash,
            created_at: DateTime::now(),
        };
        match self.users.insert_one(&doc).await {
            Ok(_) => Ok(doc.into()),
            Err(err) if is_duplicate_key(&err) => {
                Err(self.conflict(None, Some(&doc.email), Some(&doc.username), err).await)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Looks a user up by id; a malformed id is simply not found.
    pub async fn find_by_id(&self, id: &str) -> Result<Option<UserDoc>, ApiError> {
        let Ok(oid) = ObjectId::parse_str(id) else {
            return Ok(None);
        };
        Ok(self.users.find_one(doc! { "_id": oid }).await?)
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self.users.find_one(doc! { "email": email }).await?)
    }

    pub async fn find_by_username(&self, username: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self.users.find_one(doc! { "username": username }).await?)
    }

    /// One page, ordered by `created_at` then `id` so pages never overlap.
    pub async fn list(&self, page: u64, per_page: u64) -> Result<Page, ApiError> {
        let skip = (page - 1).saturating_mul(per_page);
        let docs: Vec<UserDoc> = self
            .users
            .find(doc! {})
            .sort(doc! { "created_at": 1, "_id": 1 })
            .skip(skip)
            .limit(i64::try_from(per_page).map_err(ApiError::internal)?)
            .await?
            .try_collect()
            .await?;
        let total = self.users.count_documents(doc! {}).await?;
        Ok(Page {
            users: docs.into_iter().map(User::from).collect(),
            total,
        })
    }

    pub async fn count(&self) -> Result<u64, ApiError> {
        Ok(self.users.count_documents(doc! {}).await?)
    }

    /// Applies `changes`; `Ok(None)` when no such user exists.
    pub async fn update(&self, id: &str, changes: UserChanges) -> Result<Option<User>, ApiError> {
        let Ok(oid) = ObjectId::parse_str(id) else {
            return Ok(None);
        };
        let mut set = Document::new();
        if let Some(v) = &changes.username {
            set.insert("username", v);
        }
        if let Some(v) = &changes.email {
            set.insert("email", v);
        }
        if let Some(v) = &changes.role {
            set.insert("role", v);
        }
        if let Some(v) = &changes.password_hash {
            set.insert("password_hash", v);
        }
        let options = FindOneAndUpdateOptions::builder()
            .return_document(ReturnDocument::After)
            .build();
        match self
            .users
            .find_one_and_update(doc! { "_id": oid }, doc! { "$set": set })
            .with_options(options)
            .await
        {
            Ok(updated) => Ok(updated.map(User::from)),
            // FerretDB can report a unique-index clash on update as a generic
            // error, so any failure of a write that touches a unique field is
            // checked for a clash before it is called internal.
            Err(err) if changes.email.is_some() || changes.username.is_some() || is_duplicate_key(&err) => Err(self
                .conflict(Some(oid), changes.email.as_deref(), changes.username.as_deref(), err)
                .await),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes a user; false when there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, ApiError> {
        let Ok(oid) = ObjectId::parse_str(id) else {
            return Ok(false);
        };
        Ok(self.users.delete_one(doc! { "_id": oid }).await?.deleted_count == 1)
    }

    /// True when at least one user has the admin role.
    pub async fn admin_exists(&self) -> Result<bool, ApiError> {
        Ok(self.users.find_one(doc! { "role": ROLE_ADMIN }).await?.is_some())
    }

    /// Gives the user with this email the admin role; false when none exists.
    pub async fn promote_to_admin(&self, email: &str) -> Result<bool, ApiError> {
        let result = self
            .users
            .update_one(doc! { "email": email }, doc! { "$set": { "role": ROLE_ADMIN } })
            .await?;
        Ok(result.matched_count == 1)
    }

    /// Works out which unique field a failed write clashed on by looking for
    /// another user holding the value. The index, not this lookup, decided
    /// the write; the lookup only names the field, since FerretDB's error does
    /// not always say which index refused it.
    async fn conflict(
        &self,
        own_id: Option<ObjectId>,
        email: Option<&str>,
        username: Option<&str>,
        cause: mongodb::error::Error,
    ) -> ApiError {
        let held_by_other = |found: &Option<UserDoc>| found.as_ref().is_some_and(|u| Some(u.id) != own_id);
        if let Some(email) = email {
            match self.find_by_email(email).await {
                Ok(found) if held_by_other(&found) => return ApiError::Conflict("email"),
                Ok(_) => {}
                Err(lookup) => return lookup,
            }
        }
        if let Some(username) = username {
            match self.find_by_username(username).await {
                Ok(found) if held_by_other(&found) => return ApiError::Conflict("username"),
                Ok(_) => {}
                Err(lookup) => return lookup,
            }
        }
        if is_duplicate_key(&cause) {
            // The clashing user went away between the write and the lookup.
            return ApiError::Conflict("email or username");
        }
        cause.into()
    }
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}
