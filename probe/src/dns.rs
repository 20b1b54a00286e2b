//! The probe's DNS side, without I/O: answers an `A` query for the probe name (or any name under
//! it) with the address the query came from. Asked through a resolver, that is the resolver's
//! address: the `whoami` technique a DNS-leak check relies on.

use std::net::IpAddr;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_NOERROR: u8 = 0;
const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;
/// Opcode bits of the flags' first byte.
const OPCODE_MASK: u8 = 0b0111_1000;

/// The question of a query: its name (lower case, no trailing dot), type and class, and where the
/// question section ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Question {
    name: String,
    qtype: u16,
    qclass: u16,
    end: usize,
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// Reads an uncompressed name (queries carry no pointers) at `at`.
fn read_question(buf: &[u8]) -> Option<Question> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*buf.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Pointers (0b11…) and the reserved forms have no place in a question.
        if len > 63 {
            return None;
        }
        let label = buf.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
        if labels.iter().map(|l| l.len() + 1).sum::<usize>() > 255 {
            return None;
        }
    }
    Some(Question {
        name: labels.join("."),
        qtype: read_u16(buf, at)?,
        qclass: read_u16(buf, at + 2)?,
        end: at + 4,
    })
}

/// Whether `name` is `zone` or a name under it.
fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|rest| rest.ends_with('.'))
}

/// The response to `query` from `from`, or `None` when it is not worth an answer (too short to
/// carry an id, or itself a response).
pub fn answer(query: &[u8], from: IpAddr, zone: &str) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let qdcount = read_u16(query, 4)?;
    let opcode = query[2] & OPCODE_MASK;
    let question = if qdcount == 1 { read_question(query) } else { None };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[0..2]);
    // QR, the query's opcode, AA; RD copied.
    out.push(0x80 | opcode | 0x04 | (query[2] & 0x01));
    let Some(q) = question else {
        out.push(RCODE_FORMERR);
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        return Some(out);
    };
    let rcode = if opcode != 0 {
        RCODE_NOTIMP
    } else if !in_zone(&q.name, &zone) || q.qclass != CLASS_IN {
        RCODE_REFUSED
    } else {
        RCODE_NOERROR
    };
    let address = match (rcode, q.qtype, from) {
        (RCODE_NOERROR, TYPE_A, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
        (RCODE_NOERROR, TYPE_AAAA, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
        // Any other type, or an address of the other family: the name exists, no such record.
        _ => None,
    };
    out.push(rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::from(address.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..q.end)?);
    if let Some(rdata) = address {
        // The name as a pointer to the question's (offset 12), no caching anywhere.
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

/// A query for `name` of type `qtype`, id `id`, recursion desired: what a stub resolver sends.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// The first `A` record of a response with id `id`, if it is one.
pub fn first_a(response: &[u8], id: u16) -> Option<std::net::Ipv4Addr> {
    if read_u16(response, 0)? != id || response[2] & 0x80 == 0 || response[3] & 0x0F != 0 {
        return None;
    }
    if read_u16(response, 6)? == 0 {
        return None;
    }
    let q = read_question(response)?;
    let mut at = q.end;
    // The answer's name: a pointer (two bytes) or labels.
    if response.get(at)? & 0xC0 == 0xC0 {
        at += 2;
    } else {
        while *response.get(at)? != 0 {
            at += usize::from(*response.get(at)?) + 1;
        }
        at += 1;
    }
    let rtype = read_u16(response, at)?;
    let rdlen = usize::from(read_u16(response, at + 8)?);
    let rdata = response.get(at + 10..at + 10 + rdlen)?;
    match (rtype, rdata) {
        (TYPE_A, [a, b, c, d]) => Some(std::net::Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

/// Record types the probe knows, for callers building queries.
pub mod types {
    pub const A: u16 = super::TYPE_A;
    pub const AAAA: u16 = super::TYPE_AAAA;
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const ZONE: &str = "whoami.probe.test";

    #[test]
    fn a_query_gets_the_askers_address() {
        let from = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 53));
        let q = query(0x1234, "WhoAmI.probe.test.", types::A);
        let r = answer(&q, from, ZONE).unwrap();
        assert_eq!(first_a(&r, 0x1234), Some(Ipv4Addr::new(198, 18, 0, 53)));
        // Authoritative, recursion-desired copied, one answer, the question echoed.
        assert_eq!(r[2], 0x85);
        assert_eq!(&r[6..8], &[0, 1]);
        assert_eq!(&r[12..q.len()], &q[12..]);
    }

    #[test]
    fn names_under_the_zone_count_and_others_are_refused() {
        let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let under = answer(&query(1, "x1.whoami.probe.test", types::A), from, ZONE).unwrap();
        assert_eq!(first_a(&under, 1), Some(Ipv4Addr::LOCALHOST));
        let outside = answer(&query(2, "example.org", types::A), from, ZONE).unwrap();
        assert_eq!(outside[3] & 0x0F, RCODE_REFUSED);
        let lookalike = answer(&query(3, "evilwhoami.probe.test", types::A), from, ZONE).unwrap();
        assert_eq!(lookalike[3] & 0x0F, RCODE_REFUSED);
    }

    #[test]
    fn other_types_and_families_get_no_record() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let aaaa = answer(&query(7, ZONE, types::AAAA), v4, ZONE).unwrap();
        assert_eq!((aaaa[3] & 0x0F, &aaaa[6..8]), (RCODE_NOERROR, &[0u8, 0][..]));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let a_from_v6 = answer(&query(8, ZONE, types::A), v6, ZONE).unwrap();
        assert_eq!(first_a(&a_from_v6, 8), None);
    }

    #[test]
    fn malformed_queries() {
        let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(answer(&[1, 2, 3], from, ZONE), None);
        let mut response = query(9, ZONE, types::A);
        response[2] |= 0x80;
        assert_eq!(answer(&response, from, ZONE), None, "responses are not answered");
        let mut truncated = query(10, ZONE, types::A);
        truncated.truncate(20);
        let r = answer(&truncated, from, ZONE).unwrap();
        assert_eq!(r[3] & 0x0F, RCODE_FORMERR);
        let mut pointer = query(11, ZONE, types::A);
        pointer[12] = 0xC0;
        assert_eq!(answer(&pointer, from, ZONE).unwrap()[3] & 0x0F, RCODE_FORMERR);
    }
}
