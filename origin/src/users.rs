//! User persistence in MongoDB.
//!
//! Owns the `users` collection: its document shape, its indexes and every
//! query against it. Uniqueness of email and username is decided by unique
//! indexes, never by a check-then-insert (two concurrent registrations would
//! both pass the check). Knows nothing of HTTP beyond returning [`ApiError`].
//!
//! Usernames are unique regardless of case but shown as given: each user
//! also stores `username_lower`, and the unique index is on that. FerretDB
//! 1.24 has no collation indexes, so a normalised field is the portable way.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{FindOneAndUpdateOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// MongoDB's code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;
/// Name of the case-insensitive username index, also what start-up checks
/// for before building it.
const USERNAME_KEY_INDEX: &str = "username_lower_unique";
/// Users given their `username_lower` per round trip by the start-up backfill.
const BACKFILL_BATCH: i64 = 500;

pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";

/// A user as stored. The hash stays in this module and in `routes::login`;
/// everything sent to a client goes through [`User`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub username: String,
    /// [`username_key`] of `username`, the field the case-insensitive unique
    /// index is on. Empty on a document written without it (by an older
    /// origin or another tool) until the next start-up backfills it.
    #[serde(default)]
    pub username_lower: String,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: DateTime,
    /// Tokens issued at or before this second (Unix time) were revoked
    /// (`Revoke-Subject`); new ones are issued after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_revoked_before: Option<i64>,
}

/// The form of a username its uniqueness is judged on.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
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
    /// Records that the user's tokens issued until this second are revoked.
    pub tokens_revoked_before: Option<u64>,
}

/// One page of the user list.
pub struct Page {
    pub users: Vec<User>,
    pub total: u64,
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDoc>,
    /// Whether the case-insensitive username index is in place. It cannot be
    /// built while stored usernames differ only in case; until an operator
    /// renames them, writes look for a case variant themselves (see
    /// [`UserStore::check_username_free`]). False until
    /// [`UserStore::ensure_indexes`] has run.
    username_key_indexed: bool,
}

impl UserStore {
    pub fn new(db: &Database) -> UserStore {
        UserStore {
            users: db.collection("users"),
            username_key_indexed: false,
        }
    }

    /// Creates the unique indexes uniqueness depends on, and the index the
    /// list order uses, after giving users stored before `username_lower`
    /// existed their key. Idempotent; run at every start-up.
    ///
    /// Usernames that differ only in case do not stop start-up: they are
    /// logged as an error naming them, and the store runs without the
    /// case-insensitive index until a restart after they are renamed.
    pub async fn ensure_indexes(&mut self) -> Result<(), mongodb::error::Error> {
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
        self.backfill_username_keys().await?;
        self.username_key_indexed = existing.iter().any(|e| e == USERNAME_KEY_INDEX)
            || self.create_username_key_index(unique("username_lower")).await?;
        Ok(())
    }

    /// Sets `username_lower` on every user without one, in batches by id so
    /// memory stays bounded and a user that cannot be keyed is passed over,
    /// not fetched again forever.
    async fn backfill_username_keys(&self) -> Result<(), mongodb::error::Error> {
        let raw = self.users.clone_with_type::<Document>();
        let mut after: Option<ObjectId> = None;
        let mut filled = 0u64;
        loop {
            let mut filter = doc! { "username_lower": { "$exists": false } };
            if let Some(id) = after {
                filter.insert("_id", doc! { "$gt": id });
            }
            let batch: Vec<Document> = raw
                .find(filter)
                .projection(doc! { "username": 1 })
                .sort(doc! { "_id": 1 })
                .limit(BACKFILL_BATCH)
                .await?
                .try_collect()
                .await?;
            let Some(last) = batch.last() else { break };
            // Ids that are not ObjectIds were not written by the origin; the
            // batch cannot be paged past them, so stop rather than loop.
            let Ok(last_id) = last.get_object_id("_id") else {
                tracing::warn!("a user id is not an ObjectId; username backfill stopped");
                break;
            };
            after = Some(last_id);
            for user in &batch {
                let (Ok(id), Ok(username)) = (user.get_object_id("_id"), user.get_str("username")) else {
                    tracing::warn!(user_id = ?user.get("_id"), "user without an ObjectId or a string username; not given a username key");
                    continue;
                };
                raw.update_one(
                    doc! { "_id": id, "username_lower": { "$exists": false } },
                    doc! { "$set": { "username_lower": username_key(username) } },
                )
                .await?;
                filled += 1;
            }
        }
        if filled > 0 {
            tracing::info!(users = filled, "username_lower backfilled");
        }
        Ok(())
    }

    /// Builds the case-insensitive username index; false when stored
    /// usernames that differ only in case prevent it (each clash logged).
    async fn create_username_key_index(&self, index: IndexModel) -> Result<bool, mongodb::error::Error> {
        let err = match self.users.create_index(index).await {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        let clashes = self.username_clashes().await?;
        if clashes.is_empty() {
            return Err(err);
        }
        for clash in clashes {
            let (ids, usernames): (Vec<String>, Vec<String>) =
                clash.into_iter().map(|(id, name)| (id.to_hex(), name)).unzip();
            tracing::error!(
                ?usernames,
                ?ids,
                "usernames differ only in case, so the case-insensitive unique index cannot be built; \
                 rename all but one (PUT /users/{{id}}) and restart. Until then new clashes are refused \
                 by a lookup that two concurrent requests can both pass"
            );
        }
        Ok(false)
    }

    /// Groups of users whose usernames differ only in case, as (id, username).
    async fn username_clashes(&self) -> Result<Vec<Vec<(ObjectId, String)>>, mongodb::error::Error> {
        let raw = self.users.clone_with_type::<Document>();
        let mut cursor = raw.find(doc! {}).projection(doc! { "username": 1 }).await?;
        let mut by_key: HashMap<String, Vec<(ObjectId, String)>> = HashMap::new();
        while let Some(user) = cursor.try_next().await? {
            if let (Ok(id), Ok(username)) = (user.get_object_id("_id"), user.get_str("username")) {
                by_key
                    .entry(username_key(username))
                    .or_default()
                    .push((id, username.to_owned()));
            }
        }
        Ok(by_key.into_values().filter(|users| users.len() > 1).collect())
    }

    /// Refuses a username another user holds in any case, when the
    /// case-insensitive index is missing and cannot refuse it itself. A
    /// check-then-write that racing requests can both pass: only the
    /// degraded mode relies on it.
    async fn check_username_free(&self, own_id: Option<ObjectId>, username: &str) -> Result<(), ApiError> {
        if self.username_key_indexed {
            return Ok(());
        }
        match self.find_by_username(username).await? {
            Some(holder) if Some(holder.id) != own_id => Err(ApiError::Conflict("username")),
            _ => Ok(()),
        }
    }

    pub async fn insert(&self, new: NewUser) -> Result<User, ApiError> {
        self.check_username_free(None, &new.username).await?;
        let doc = UserDoc {
            id: ObjectId::new(),
            username_lower: username_key(&new.username),
            username: new.username,
            email: new.email,
            role: new.role.to_owned(),
            password_hash: new.password_hash,
            created_at: DateTime::now(),
            tokens_revoked_before: None,
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

    /// Looks a user up by username in any case. The exact spelling is tried
    /// first: it finds a user stored without `username_lower` (written by
    /// another tool since start-up), and tells apart users whose names
    /// clash only in case from before usernames were case-insensitive.
    pub async fn find_by_username(&self, username: &str) -> Result<Option<UserDoc>, ApiError> {
        if let Some(user) = self.users.find_one(doc! { "username": username }).await? {
            return Ok(Some(user));
        }
        Ok(self
            .users
            .find_one(doc! { "username_lower": username_key(username) })
            .await?)
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
            self.check_username_free(Some(oid), v).await?;
            set.insert("username", v);
            set.insert("username_lower", username_key(v));
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
        if let Some(v) = changes.tokens_revoked_before {
            set.insert("tokens_revoked_before", v as i64);
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
