//! Source user → destination user (docs/behaviour.md §2.2): the sync items.

use crate::directory::{DesiredUser, User, UserSink};
use crate::sync::config::{Direction, SyncConfig, UpnMode, ends_with_ignore_ascii_case};
use crate::sync::immutable_id::{ImmutableIdError, immutable_id};

/// A source user after mapping: what the destination should hold, plus what the preview shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedUser {
    /// The user's id in the source (Entra object id), kept in the managed set so a user who
    /// left the domain can be looked up again (hand-over).
    pub source_id: String,
    /// The source userPrincipalName; always shown in the preview, whether or not it is carried
    /// to the destination.
    pub upn: String,
    pub desired: DesiredUser,
    /// Disabled, with neither given name nor surname: probably a room, equipment or shared
    /// mailbox. Synced (unless excluded) but flagged in the preview.
    pub resource_like: bool,
    /// What the preview's userName column shows when it is not the destination's userName: the
    /// source's userName in the other direction (docs/behaviour.md §6), whose destination
    /// "userName" is the Entra userPrincipalName.
    pub shown_user_name: Option<String>,
    /// Why this user cannot be written at all (a UPN Graph would refuse): planned as a Conflict
    /// row with this reason, never written, never a reason to delete.
    pub invalid: Option<String>,
}

/// Source users left out of a run, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub guests: usize,
    /// Only when `excludeResourceLikeAccounts` is set.
    pub resource_like: usize,
    /// UPN not in the domain: the source's filter should already have left these out.
    pub out_of_domain: usize,
}

/// The result of mapping a whole source listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedSource {
    pub users: Vec<MappedUser>,
    pub skipped: Skipped,
}

/// What became of one source user.
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived return value, never stored in bulk"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    User(MappedUser),
    Guest,
    ResourceLikeExcluded,
    OutOfDomain,
}

/// Maps every user of a source listing. Takes the listing by value so that strings move into
/// the result instead of being copied (a 100k-user run holds one copy).
pub fn map_source_users(
    cfg: &SyncConfig,
    users: Vec<User>,
) -> Result<MappedSource, ImmutableIdError> {
    let mut mapper = SourceMapper::new(cfg);
    mapper.size_hint(users.len());
    for user in users {
        mapper.push(user);
    }
    mapper.finish().map(|(mapped, _)| mapped)
}

/// Maps a source listing while it is read ([`Directory::list_users_into`]): each user becomes a
/// sync item (or a skip count) at once, so the listing is never held whole in the common model
/// next to its mapped form — at 100,000 users that pair was the run's peak memory.
///
/// [`Directory::list_users_into`]: crate::directory::Directory::list_users_into
pub struct SourceMapper<'a> {
    cfg: &'a SyncConfig,
    suffix: String,
    out: MappedSource,
    read: usize,
    /// The first user that could not be mapped; the rest are only counted.
    error: Option<ImmutableIdError>,
}

impl<'a> SourceMapper<'a> {
    pub fn new(cfg: &'a SyncConfig) -> Self {
        Self {
            cfg,
            suffix: cfg.domain_suffix(),
            out: MappedSource::default(),
            read: 0,
            error: None,
        }
    }

    /// The mapped source and the number of users read (before mapping), or the first error.
    pub fn finish(self) -> Result<(MappedSource, usize), ImmutableIdError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.out, self.read)),
        }
    }
}

impl UserSink for SourceMapper<'_> {
    fn size_hint(&mut self, n: usize) {
        let users = &mut self.out.users;
        users.reserve_exact(n.saturating_sub(users.len()));
    }

    fn push(&mut self, user: User) {
        self.read += 1;
        if self.error.is_some() {
            return;
        }
        match map_one(self.cfg, &self.suffix, user) {
            Ok(Mapped::User(u)) => self.out.users.push(u),
            Ok(Mapped::Guest) => self.out.skipped.guests += 1,
            Ok(Mapped::ResourceLikeExcluded) => self.out.skipped.resource_like += 1,
            Ok(Mapped::OutOfDomain) => self.out.skipped.out_of_domain += 1,
            Err(e) => self.error = Some(e),
        }
    }
}

/// Maps one source user.
pub fn map_source_user(cfg: &SyncConfig, user: User) -> Result<Mapped, ImmutableIdError> {
    map_one(cfg, &cfg.domain_suffix(), user)
}

/// Maps one source user by the config's direction.
fn map_one(cfg: &SyncConfig, suffix: &str, user: User) -> Result<Mapped, ImmutableIdError> {
    match cfg.direction {
        Direction::EntraIdToScim => map_with_suffix(cfg, suffix, user),
        Direction::ScimToEntraId => crate::sync::reverse::map_scim_user(cfg, suffix, user),
    }
}

/// Disabled, with neither given name nor surname (docs/behaviour.md §2.1).
pub fn is_resource_like(user: &User) -> bool {
    !user.active
        && non_empty(user.given_name.as_deref()).is_none()
        && non_empty(user.surname.as_deref()).is_none()
}

/// `mail`, else the primary `SMTP:` entry of `proxyAddresses` (the upper-case prefix marks the
/// primary address; lower-case `smtp:` entries are aliases), else none.
pub fn source_email(user: &User) -> Option<String> {
    // On the Graph side the common model's `email` is `mail`.
    if let Some(mail) = non_empty(user.email.as_deref()) {
        return Some(mail.to_owned());
    }
    user.proxy_addresses
        .iter()
        .find_map(|a| a.strip_prefix("SMTP:"))
        .and_then(|a| non_empty(Some(a)))
        .map(str::to_owned)
}

fn map_with_suffix(
    cfg: &SyncConfig,
    suffix: &str,
    mut user: User,
) -> Result<Mapped, ImmutableIdError> {
    if user.guest {
        return Ok(Mapped::Guest);
    }
    // Defence in depth: the source was asked for this domain only, but a user outside it
    // must never become a destination user of this resource.
    if !ends_with_ignore_ascii_case(&user.user_name, suffix) || user.user_name.len() == suffix.len()
    {
        return Ok(Mapped::OutOfDomain);
    }
    let resource_like = is_resource_like(&user);
    if resource_like && cfg.exclude_resource_like_accounts {
        return Ok(Mapped::ResourceLikeExcluded);
    }
    let immutable_id = immutable_id(&user)?;
    // Moved rather than copied when present (what `source_email` would return).
    let email = match user.email.take().filter(|m| !m.is_empty()) {
        Some(mail) => Some(mail),
        None => source_email(&user),
    };
    let user_name = match cfg.upn_mode {
        UpnMode::Enabled => user.user_name.clone(),
        UpnMode::Disabled => user.user_name[..user.user_name.len() - suffix.len()].to_owned(),
    };
    let upn = user.user_name;
    let desired = DesiredUser {
        user_name,
        display_name: user.display_name.filter(|s| !s.is_empty()),
        given_name: user.given_name.filter(|s| !s.is_empty()),
        surname: user.surname.filter(|s| !s.is_empty()),
        email,
        active: user.active,
        immutable_id,
        upn: cfg.upn_attribute().map(|_| upn.clone()),
    };
    Ok(Mapped::User(MappedUser {
        source_id: user.id,
        upn,
        desired,
        resource_like,
        shown_user_name: None,
        invalid: None,
    }))
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "46e23144-8377-483e-a87e-b6769db62eed";

    fn cfg(mode: UpnMode) -> SyncConfig {
        SyncConfig::new("example.com", mode, 65)
    }

    fn graph_user(upn: &str) -> User {
        User {
            id: GUID.into(),
            user_name: upn.into(),
            upn: Some(upn.into()),
            display_name: Some("Alice Liddell".into()),
            given_name: Some("Alice".into()),
            surname: Some("Liddell".into()),
            email: Some("alice@example.com".into()),
            active: true,
            ..User::default()
        }
    }

    fn mapped(cfg: &SyncConfig, user: User) -> MappedUser {
        match map_source_user(cfg, user) {
            Ok(Mapped::User(u)) => u,
            other => panic!("expected a user, got {other:?}"),
        }
    }

    #[test]
    fn upn_mode_enabled_keeps_the_whole_upn() {
        let u = mapped(&cfg(UpnMode::Enabled), graph_user("Alice@Example.com"));
        assert_eq!(u.desired.user_name, "Alice@Example.com");
        assert_eq!(u.desired.immutable_id, "RDHiRneDPkiofrZ2nbYu7Q==");
        assert_eq!(u.desired.display_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(u.desired.given_name.as_deref(), Some("Alice"));
        assert_eq!(u.desired.surname.as_deref(), Some("Liddell"));
        assert!(u.desired.active);
        assert_eq!(u.source_id, GUID);
        assert_eq!(u.upn, "Alice@Example.com");
        assert!(!u.resource_like);
    }

    #[test]
    fn upn_mode_disabled_keeps_the_part_before_at() {
        let u = mapped(&cfg(UpnMode::Disabled), graph_user("alice.l@EXAMPLE.COM"));
        assert_eq!(u.desired.user_name, "alice.l");
        assert_eq!(u.upn, "alice.l@EXAMPLE.COM");
    }

    #[test]
    fn upn_is_carried_only_when_an_attribute_is_configured() {
        let mut c = cfg(UpnMode::Disabled);
        assert_eq!(
            mapped(&c, graph_user("alice@example.com")).desired.upn,
            None
        );
        c.upn_attribute = Some("urn:x:upn".into());
        assert_eq!(
            mapped(&c, graph_user("alice@example.com"))
                .desired
                .upn
                .as_deref(),
            Some("alice@example.com")
        );
    }

    #[test]
    fn email_is_mail_else_primary_smtp_else_none() {
        let c = cfg(UpnMode::Enabled);
        let mut u = graph_user("alice@example.com");
        u.email = None;
        u.proxy_addresses = vec![
            "smtp:alias@example.com".into(),
            "SMTP:primary@example.com".into(),
            "SIP:x".into(),
        ];
        assert_eq!(
            mapped(&c, u.clone()).desired.email.as_deref(),
            Some("primary@example.com")
        );
        u.email = Some(String::new());
        assert_eq!(
            mapped(&c, u.clone()).desired.email.as_deref(),
            Some("primary@example.com")
        );
        u.proxy_addresses = vec!["smtp:alias@example.com".into()];
        assert_eq!(mapped(&c, u.clone()).desired.email, None);
        u.email = Some("mail@example.com".into());
        u.proxy_addresses = vec!["SMTP:primary@example.com".into()];
        assert_eq!(
            mapped(&c, u).desired.email.as_deref(),
            Some("mail@example.com")
        );
    }

    #[test]
    fn guests_are_never_synced() {
        let mut u = graph_user("guest@example.com");
        u.guest = true;
        assert_eq!(
            map_source_user(&cfg(UpnMode::Enabled), u),
            Ok(Mapped::Guest)
        );
    }

    #[test]
    fn users_outside_the_domain_are_dropped() {
        let c = cfg(UpnMode::Enabled);
        for upn in [
            "alice@other.com",
            "alice@sub.example.com.evil",
            "alice@notexample.com",
            "@example.com",
            "alice",
        ] {
            assert_eq!(
                map_source_user(&c, graph_user(upn)),
                Ok(Mapped::OutOfDomain),
                "{upn}"
            );
        }
        // A subdomain is another domain.
        assert_eq!(
            map_source_user(&c, graph_user("a@sub.example.com")),
            Ok(Mapped::OutOfDomain)
        );
    }

    #[test]
    fn resource_like_accounts_are_flagged_or_excluded() {
        let mut c = cfg(UpnMode::Enabled);
        let mut room = graph_user("room1@example.com");
        room.active = false;
        room.given_name = None;
        room.surname = Some(String::new());
        assert!(mapped(&c, room.clone()).resource_like);
        c.exclude_resource_like_accounts = true;
        assert_eq!(
            map_source_user(&c, room.clone()),
            Ok(Mapped::ResourceLikeExcluded)
        );
        // Enabled, or with a name: a person.
        room.active = true;
        assert!(!mapped(&c, room.clone()).resource_like);
        room.active = false;
        room.given_name = Some("Bob".into());
        assert!(!mapped(&c, room).resource_like);
    }

    #[test]
    fn empty_strings_are_absent_values() {
        let mut u = graph_user("alice@example.com");
        u.display_name = Some(String::new());
        let m = mapped(&cfg(UpnMode::Enabled), u);
        assert_eq!(m.desired.display_name, None);
    }

    #[test]
    fn bad_object_id_is_a_read_error() {
        let mut u = graph_user("alice@example.com");
        u.id = "nope".into();
        assert!(map_source_users(&cfg(UpnMode::Enabled), vec![u.clone()]).is_err());
        // ...unless the user is skipped anyway.
        u.guest = true;
        let out =
            map_source_users(&cfg(UpnMode::Enabled), vec![u]).expect("guest is skipped first");
        assert_eq!(out.skipped.guests, 1);
    }

    #[test]
    fn whole_listing_counts_what_was_skipped() {
        let c = cfg(UpnMode::Enabled);
        let mut guest = graph_user("g@example.com");
        guest.guest = true;
        let out = map_source_users(
            &c,
            vec![
                graph_user("a@example.com"),
                guest,
                graph_user("x@other.org"),
            ],
        )
        .expect("maps");
        assert_eq!(out.users.len(), 1);
        assert_eq!(
            out.skipped,
            Skipped {
                guests: 1,
                resource_like: 0,
                out_of_domain: 1
            }
        );
    }

    #[test]
    fn a_listing_is_mapped_as_it_is_read() {
        let c = cfg(UpnMode::Enabled);
        let mut mapper = SourceMapper::new(&c);
        mapper.size_hint(10);
        let mut bad = graph_user("bad@example.com");
        bad.id = "not-a-guid".into();
        let mut worse = graph_user("worse@example.com");
        worse.id = "nor-this".into();
        for u in [
            graph_user("a@example.com"),
            bad,
            worse,
            graph_user("b@example.com"),
        ] {
            mapper.push(u);
        }
        let err = mapper
            .finish()
            .expect_err("an unmappable user fails the read");
        assert_eq!(err.object_id, "not-a-guid", "the first error is kept");

        let mut mapper = SourceMapper::new(&c);
        mapper.size_hint(10);
        for u in [graph_user("a@example.com"), graph_user("x@other.org")] {
            mapper.push(u);
        }
        let (out, read) = mapper.finish().expect("maps");
        assert_eq!(read, 2, "users read, before mapping");
        assert_eq!(out.users.len(), 1);
        assert!(
            out.users.capacity() >= 10,
            "room made from the listing's count"
        );
        assert_eq!(out.skipped.out_of_domain, 1);
    }
}
