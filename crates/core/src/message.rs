//! A message's identity, as the broker de-duplicates it.
//!
//! A client names its message with a `message_id` (or the router generates one). Ids are
//! the client's, so they are only unique per tenant, and a buggy client may reuse one for
//! another payload. The broker de-duplicates on one stream for every provider, inside its
//! duplicate window, so the id it de-duplicates on (JetStream's `Nats-Msg-Id`) must tell
//! apart exactly the messages that are different:
//! - the same message retried (same tenant, id and payload bytes) gets the same
//!   [`delivery_id`], whichever provider and router instance it goes through, so it is
//!   stored once;
//! - two tenants using the same id get different delivery ids (neither is lost);
//! - one id reused with another payload gets another delivery id: both are stored, so an
//!   accepted message is never dropped as a "duplicate" of a different one. (The router
//!   refuses such a reuse with 409 when it still remembers the first; when it does not,
//!   after a restart or once the id has left its memory, storing both is the safe answer.)
//!
//! The fingerprint is FNV-1a over the payload bytes: stable across builds, platforms and
//! restarts (an outbox written by one version is delivered by the next; several router
//! instances compute the same id). It is not a defence against a tenant crafting
//! collisions among its own messages, which could only hurt that tenant.

/// 64-bit FNV-1a of `bytes`.
pub fn payload_fingerprint(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The id the broker de-duplicates a message on: `<tenant_id>:<message_id>:<fingerprint>`
/// (at most 64 + 1 + the message id's length + 1 + 16 characters, all printable ASCII:
/// tenant ids are `[A-Za-z0-9_-]`, message ids printable ASCII without spaces). It is the
/// only header the router adds (each header costs the broker: two more measured ~20% of
/// the publish path's throughput); consumers read the ids back with [`parse_delivery_id`].
pub fn delivery_id(tenant: &str, message_id: &str, payload: &[u8]) -> String {
    format!(
        "{tenant}:{message_id}:{:016x}",
        payload_fingerprint(payload)
    )
}

/// The tenant id, message id and fingerprint of a [`delivery_id`] (what a consumer reads
/// off `Nats-Msg-Id`); `None` if `id` is not one. Unambiguous: tenant ids hold no `:`,
/// and the fingerprint is the last 16 hex digits.
pub fn parse_delivery_id(id: &str) -> Option<(&str, &str, u64)> {
    let (tenant, rest) = id.split_once(':')?;
    let (message_id, fingerprint) = rest.rsplit_once(':')?;
    if tenant.is_empty() || message_id.is_empty() || fingerprint.len() != 16 {
        return None;
    }
    Some((
        tenant,
        message_id,
        u64::from_str_radix(fingerprint, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(payload_fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(payload_fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(payload_fingerprint(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn delivery_ids_tell_apart_tenants_and_payloads_not_retries() {
        let id = delivery_id("acme", "order-42", b"{\"a\":1}");
        assert_eq!(id, delivery_id("acme", "order-42", b"{\"a\":1}"));
        assert_ne!(id, delivery_id("other", "order-42", b"{\"a\":1}"));
        assert_ne!(id, delivery_id("acme", "order-42", b"{\"a\":2}"));
        assert_ne!(id, delivery_id("acme", "order-43", b"{\"a\":1}"));
        assert!(id.starts_with("acme:order-42:"));
        assert_eq!(id.len(), "acme:order-42:".len() + 16);
    }

    #[test]
    fn a_delivery_id_gives_back_its_parts_even_with_colons_in_the_message_id() {
        let id = delivery_id("acme", "urn:order:42", b"x");
        assert_eq!(
            parse_delivery_id(&id),
            Some(("acme", "urn:order:42", payload_fingerprint(b"x")))
        );
        assert_eq!(parse_delivery_id("plain-id"), None);
        assert_eq!(parse_delivery_id("acme:m:not-hex-not-16"), None);
        assert_eq!(parse_delivery_id(":m:0123456789abcdef"), None);
    }
}
