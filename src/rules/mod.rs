//! One site's request rules (SPEC.md "Sites and rules"), compiled once
//! from the configuration: `[[redirect]]`, `[[rewrite]]`, `[[access]]`
//! and `[[auth]]` (with its htpasswd files, `htpasswd`).
//!
//! Rules of one kind are tried in file order and the first that matches
//! wins. Prefix rules are a string test; the regexes of one kind sit in
//! one `RegexSet`, so a request costs one pass per kind however many
//! rules there are, and the winning regex runs again only for its
//! captures. The router decides the order (redirect, rewrite, access,
//! auth) and the hop limit; this module only answers "which rule, and
//! what does it say".
//!
//! Captures (`$1`) are taken from the decoded path and percent-encoded
//! again where they land, so a capture can add neither a query nor a
//! fragment nor a path segment the router would not check again.

pub mod htpasswd;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use regex::{Captures, RegexSet};

use crate::config::{Access, Auth, PathMatch, Redirect, Rewrite, SiteRules};
use crate::error::Error;
use crate::uri_path::{is_pchar, push_percent_encoded};
use htpasswd::Htpasswd;

/// The rules of one kind, with a combined matcher.
struct RuleList<T> {
    rules: Vec<T>,
    /// Rule index of every prefix rule, and its prefix.
    prefixes: Vec<(usize, String)>,
    /// The regexes of the kind, and the rule index of each.
    set: RegexSet,
    set_rules: Vec<usize>,
}

impl<T> RuleList<T> {
    fn new(rules: Vec<T>, matcher: impl Fn(&T) -> &PathMatch) -> Result<Self, String> {
        let mut prefixes = Vec::new();
        let mut patterns = Vec::new();
        let mut set_rules = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match matcher(r) {
                PathMatch::Prefix(p) => prefixes.push((i, p.clone())),
                PathMatch::Regex(re) => {
                    patterns.push(re.as_str().to_string());
                    set_rules.push(i);
                }
            }
        }
        let set = RegexSet::new(&patterns).map_err(|e| e.to_string())?;
        Ok(RuleList {
            rules,
            prefixes,
            set,
            set_rules,
        })
    }

    fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule matching `subject`, in file order (for the rare kind
    /// that needs more than the first: auth by method).
    fn matching(&self, subject: &str, path: &str) -> Vec<usize> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let mut hits: Vec<usize> = self
            .prefixes
            .iter()
            .filter(|(_, p)| PathMatch::prefix_takes(p, path))
            .map(|(i, _)| *i)
            .collect();
        if !self.set_rules.is_empty() && self.set.is_match(subject) {
            hits.extend(self.set.matches(subject).iter().map(|k| self.set_rules[k]));
        }
        hits.sort_unstable();
        hits
    }

    /// The first rule (file order) matching: prefix rules test `path`,
    /// regexes `subject`.
    fn first(&self, subject: &str, path: &str) -> Option<(usize, &T)> {
        if self.rules.is_empty() {
            return None;
        }
        let by_prefix = self
            .prefixes
            .iter()
            .find(|(_, p)| PathMatch::prefix_takes(p, path))
            .map(|(i, _)| *i);
        // A regex rule only wins if it comes before the first prefix hit.
        // `is_match` stops early, and most requests match no regex: only
        // then is the set run for which one.
        let by_regex = if self.set_rules.is_empty()
            || by_prefix.is_some_and(|p| self.set_rules[0] > p)
            || !self.set.is_match(subject)
        {
            None
        } else {
            self.set
                .matches(subject)
                .iter()
                .next()
                .map(|k| self.set_rules[k])
        };
        let i = match (by_prefix, by_regex) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((i, &self.rules[i]))
    }
}

/// What `[[access]]` says about a request.
pub struct AccessVerdict<'a> {
    /// The rule that matched, if any.
    pub rule: Option<&'a Access>,
    /// The rule that refuses the client, if any.
    pub denied_by: Option<&'a Access>,
    /// false: a script under the matched prefix must not run.
    pub scripts: bool,
}

/// A site's compiled rules.
pub struct Rules {
    redirects: RuleList<Redirect>,
    rewrites: RuleList<Rewrite>,
    access: RuleList<Access>,
    auth: RuleList<(Auth, Arc<Htpasswd>)>,
}

impl Rules {
    /// Compile `rules`, loading every htpasswd file (one load per file,
    /// shared by the rules that name it).
    pub fn new(rules: &SiteRules) -> Result<Rules, String> {
        let mut files: Vec<(std::path::PathBuf, Arc<Htpasswd>)> = Vec::new();
        let mut auth = Vec::new();
        for a in &rules.auth {
            let file = match files.iter().find(|(p, _)| *p == a.htpasswd) {
                Some((_, f)) => f.clone(),
                None => {
                    let loaded = Arc::new(
                        Htpasswd::load(&a.htpasswd).map_err(|e| format!("{}: {e}", a.origin))?,
                    );
                    files.push((a.htpasswd.clone(), loaded.clone()));
                    loaded
                }
            };
            auth.push((a.clone(), file));
        }
        Ok(Rules {
            redirects: RuleList::new(rules.redirects.clone(), |r| &r.matcher)?,
            rewrites: RuleList::new(rules.rewrites.clone(), |r| &r.matcher)?,
            access: RuleList::new(rules.access.clone(), |r| &r.matcher)?,
            auth: RuleList::new(auth, |(a, _)| &a.matcher)?,
        })
    }

    /// No rule at all: the router can skip building match subjects.
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty()
            && self.rewrites.is_empty()
            && self.access.is_empty()
            && self.auth.is_empty()
    }

    pub fn has_auth(&self) -> bool {
        !self.auth.is_empty()
    }

    /// `[[redirect]]`: the first rule for `path`, its status and
    /// Location (the request's query kept).
    pub fn redirect(&self, path: &str, query: Option<&str>) -> Option<(u16, String, &str)> {
        let (_, rule) = self.redirects.first(path, path)?;
        let location = expand(&rule.matcher, &rule.to, path, query);
        Some((rule.status, location, &rule.origin))
    }

    /// `[[rewrite]]`: the first rule for `path`, and the new
    /// path-and-query (a query in `to` gets the request's appended with
    /// `&`; without one, the request's query stays).
    pub fn rewrite(&self, path: &str, query: Option<&str>) -> Option<(String, &str)> {
        let (_, rule) = self.rewrites.first(path, path)?;
        Some((expand(&rule.matcher, &rule.to, path, query), &rule.origin))
    }

    /// `[[access]]` for a client at `peer`; `subject` is the decoded path
    /// plus `?` and the raw query.
    pub fn access(&self, subject: &str, path: &str, peer: IpAddr) -> AccessVerdict<'_> {
        let Some((_, rule)) = self.access.first(subject, path) else {
            return AccessVerdict {
                rule: None,
                denied_by: None,
                scripts: true,
            };
        };
        let peer = peer.to_canonical();
        let allowed = rule.allow.iter().any(|net| net.contains(&peer));
        AccessVerdict {
            rule: Some(rule),
            denied_by: (rule.deny && !allowed).then_some(rule),
            scripts: rule.scripts,
        }
    }

    /// The first `[[auth]]` rule for this request (its methods
    /// included), if any.
    pub fn auth_rule(&self, subject: &str, path: &str, method: &Method) -> Option<AuthCheck> {
        self.auth
            .matching(subject, path)
            .into_iter()
            .map(|i| &self.auth.rules[i])
            .find(|(a, _)| a.methods.is_empty() || a.methods.iter().any(|m| covers(m, method)))
            .map(|(a, file)| AuthCheck {
                realm: a.realm.clone(),
                origin: a.origin.clone(),
                file: file.clone(),
            })
    }
}

/// An `[[auth]]` rule listing `listed` applies to a request made with
/// `method`: any letter case (hyper takes `post` as a method of its own,
/// and applications upper-case it), and HEAD wherever GET is listed (as
/// Apache's `<Limit GET>` and nginx's `limit_except GET`).
fn covers(listed: &Method, method: &Method) -> bool {
    let asked = method.as_str();
    asked.eq_ignore_ascii_case(listed.as_str())
        || (*listed == Method::GET && asked.eq_ignore_ascii_case("HEAD"))
}

/// An `[[auth]]` rule a request must pass.
#[derive(Clone)]
pub struct AuthCheck {
    realm: String,
    origin: String,
    file: Arc<Htpasswd>,
}

impl AuthCheck {
    /// Check the request's Basic credentials: the user, or a 401. Runs
    /// the hash (bcrypt costs milliseconds), so call it off the async
    /// workers (`spawn_blocking`).
    pub fn verify(&self, headers: &HeaderMap, peer: IpAddr) -> Result<String, Error> {
        let refuse = |why: String| Error::Unauthorized {
            realm: self.realm.clone(),
            why,
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(refuse(format!(
                "auth ({}): no credentials from {peer}",
                self.origin
            )));
        };
        let Some((user, password)) = htpasswd::basic_credentials(value) else {
            return Err(refuse(format!(
                "auth ({}): malformed Basic credentials from {peer}",
                self.origin
            )));
        };
        if self.file.verify(&user, &password) {
            return Ok(user);
        }
        Err(refuse(format!(
            "auth ({}): wrong password or unknown user {user:?} from {peer}",
            self.origin
        )))
    }
}

/// `to` with `$N` replaced by the captures of `matcher` on `path`, each
/// percent-encoded for where it lands (path or query), and the request's
/// `query` carried over.
fn expand(matcher: &PathMatch, to: &str, path: &str, query: Option<&str>) -> String {
    let caps = match matcher {
        PathMatch::Regex(re) => re.captures(path),
        PathMatch::Prefix(_) => None,
    };
    let mut out = String::with_capacity(to.len() + path.len());
    let mut in_query = false;
    let mut chars = to.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '?' {
            in_query = true;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        let digits: String = to[i + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(2)
            .collect();
        if digits.is_empty() {
            out.push('$');
            continue;
        }
        for _ in 0..digits.len() {
            chars.next();
        }
        let n: usize = digits.parse().unwrap_or(usize::MAX);
        if let Some(text) = capture(caps.as_ref(), n) {
            encode_into(&mut out, text, in_query);
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push(if in_query { '&' } else { '?' });
        out.push_str(q);
    }
    out
}

fn capture<'h>(caps: Option<&Captures<'h>>, n: usize) -> Option<&'h str> {
    caps?.get(n).map(|m| m.as_str())
}

/// Percent-encode a decoded capture: in a path everything but `pchar`
/// and `/`; in a query also `&`, `=`, `+` and `;`, so a capture stays one
/// value.
fn encode_into(out: &mut String, text: &str, in_query: bool) {
    let keep = |b: u8| {
        let splits_a_query = matches!(b, b'&' | b'=' | b'+' | b';');
        b == b'/' || (is_pchar(b) && !(in_query && splits_a_query))
    };
    push_percent_encoded(out, text, keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> PathMatch {
        PathMatch::Regex(regex::Regex::new(p).unwrap())
    }

    #[test]
    fn captures_are_encoded_where_they_land() {
        let m = re("^/wiki/(.*)$");
        assert_eq!(
            expand(
                &m,
                "/index.php?title=$1",
                "/wiki/A b&c=d",
                Some("action=edit")
            ),
            "/index.php?title=A%20b%26c%3Dd&action=edit"
        );
        assert_eq!(expand(&m, "/w/$1", "/wiki/a/b?#", None), "/w/a/b%3F%23");
        assert_eq!(expand(&m, "/new/$1", "/wiki/x", Some("q=1")), "/new/x?q=1");
        assert_eq!(expand(&m, "/cost$", "/wiki/x", None), "/cost$");
        assert_eq!(expand(&m, "/$9", "/wiki/x", None), "/");
    }

    #[test]
    fn the_first_rule_in_file_order_wins_across_prefixes_and_regexes() {
        let mk = |m: PathMatch, to: &str| Rewrite {
            matcher: m,
            to: to.into(),
            origin: to.into(),
        };
        let list = RuleList::new(
            vec![
                mk(PathMatch::Prefix("/a/b".into()), "first"),
                mk(re("^/a"), "second"),
                mk(PathMatch::Prefix("/a".into()), "third"),
            ],
            |r| &r.matcher,
        )
        .unwrap();
        let to = |p: &str| list.first(p, p).map(|(_, r)| r.to.as_str());
        assert_eq!(to("/a/b/c"), Some("first"));
        assert_eq!(to("/a/c"), Some("second"));
        assert_eq!(to("/ab"), Some("second"));
        assert_eq!(to("/b"), None);
    }
}
