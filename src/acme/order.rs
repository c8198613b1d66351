//! One certificate order (RFC 8555 §7.4) with instant-acme: the account
//! (stored, or created and stored), the challenges answered (HTTP-01
//! tokens for the router, TLS-ALPN-01 certificates for the resolver),
//! the CSR with a fresh key (rcgen, inside instant-acme's `finalize`),
//! and the chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

use super::{store, Acme};
use crate::config::acme::Challenge;

/// How long the CA may take to validate, and then to issue.
const VALIDATION_LIMIT: Duration = Duration::from_secs(90);

/// A new certificate for `names`: the PEM chain and the PEM key.
pub(super) async fn issue(acme: &Acme, names: &[String]) -> Result<(String, String), String> {
    let account = account(acme).await?;
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answered = Vec::new();
    let result = async {
        answer_challenges(acme, &mut order, &mut answered).await?;
        let retries = RetryPolicy::new().timeout(VALIDATION_LIMIT);
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            let why = order.state().error.as_ref().map(|p| p.to_string());
            return Err(format!(
                "the CA did not validate the names ({status:?}): {}",
                why.unwrap_or_default()
            ));
        }
        let key = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain, key))
    }
    .await;
    for (token, name) in answered {
        acme.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
        acme.resolver.set_validation(&name, None);
    }
    result
}

/// Put each pending authorization's challenge response in place and tell
/// the CA to check it; `answered`: (token, name) to withdraw afterwards.
async fn answer_challenges(
    acme: &Acme,
    order: &mut instant_acme::Order,
    answered: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let kind = match acme.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization is {other:?}")),
        }
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
        let name = challenge.identifier().to_string();
        let key_auth = challenge.key_authorization();
        match acme.challenge {
            Challenge::Http01 => {
                let mut tokens = acme.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens.insert(challenge.token.clone(), key_auth.as_str().to_string());
            }
            Challenge::TlsAlpn01 => {
                let cert = validation_cert(&name, key_auth.digest().as_ref())?;
                acme.resolver.set_validation(&name, Some(cert));
            }
        }
        answered.push((challenge.token.clone(), name));
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    Ok(())
}

/// RFC 8737 §3: a self-signed certificate for `name` carrying the key
/// authorization's digest in the acmeIdentifier extension.
fn validation_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let bad = |e: rcgen::Error| format!("tls-alpn-01 certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("tls-alpn-01 key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The ACME account: the one in memory, else the stored one, else a new
/// one (stored at once, 0600).
async fn account(acme: &Acme) -> Result<Account, String> {
    let mut cached = acme.account.lock().await;
    if let Some(a) = cached.as_ref() {
        return Ok(a.clone());
    }
    let settings = &acme.settings;
    let builder = || match &settings.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let builder = builder().map_err(|e| format!("ACME client: {e}"))?;
    let path = store::ca_dir(settings).join("account.json");
    let account = match std::fs::read(&path) {
        Ok(bytes) => {
            let creds: AccountCredentials =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            builder
                .from_credentials(creds)
                .await
                .map_err(|e| format!("account: {e}"))?
        }
        Err(_) => {
            let contact: Vec<String> = settings
                .email
                .iter()
                .map(|e| format!("mailto:{e}"))
                .collect();
            let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
            let new = NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            let (account, creds) = builder
                .create(&new, settings.directory.clone(), None)
                .await
                .map_err(|e| format!("new account at {}: {e}", settings.directory))?;
            let json = serde_json::to_vec(&creds).map_err(|e| format!("account: {e}"))?;
            store::write_atomic(&path, &json, 0o600)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!("acme: account created at {}", settings.directory);
            account
        }
    };
    *cached = Some(account.clone());
    Ok(account)
}
