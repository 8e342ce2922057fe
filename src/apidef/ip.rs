//! IP allow and deny lists (CONTRACT §4, §6; Tyk's `allowed_ips` and
//! `blacklisted_ips`): addresses and CIDR ranges, IPv4 and IPv6, parsed
//! at load. Which address a request comes from is the pipeline's question
//! (the socket peer, unless a trusted proxy says otherwise).

use std::net::IpAddr;

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An API's lists; an empty list is off.
#[derive(Clone, Debug, Default)]
pub struct IpLists {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl IpLists {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Allowed: in the allow list (when there is one) and not in the deny
    /// list.
    pub fn admits(&self, ip: IpAddr) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
            && !self.deny.iter().any(|c| c.contains(ip))
    }

    /// Tyk's switches: a list applies when it is not empty and either
    /// `ip_access_control_disabled` is off or its own enable flag is on.
    /// Err is (field, message) for an entry that does not parse.
    pub fn compile(def: &super::ApiDefinition) -> Result<IpLists, (String, String)> {
        let parse = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .filter(|(_, e)| !e.trim().is_empty())
                .map(|(i, e)| Cidr::parse(e).map_err(|why| (format!("{field}[{i}]"), why)))
                .collect::<Result<Vec<_>, _>>()
        };
        let on = |flag: bool| !def.ip_access_control_disabled || flag;
        Ok(IpLists {
            allow: if on(def.enable_ip_whitelisting) {
                parse("allowed_ips", &def.allowed_ips)?
            } else {
                Vec::new()
            },
            deny: if on(def.enable_ip_blacklisting) {
                parse("blacklisted_ips", &def.blacklisted_ips)?
            } else {
                Vec::new()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_single_addresses_both_families() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.255.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let one = Cidr::parse("192.168.0.7").unwrap();
        assert!(one.contains(ip("192.168.0.7")) && !one.contains(ip("192.168.0.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "10.0.0", "x", "::/129", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let lists = IpLists {
            allow: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            deny: vec![Cidr::parse("10.0.0.66").unwrap()],
        };
        assert!(lists.admits(ip("10.0.0.1")));
        assert!(!lists.admits(ip("10.0.0.66")));
        assert!(!lists.admits(ip("11.0.0.1")));
    }
}
