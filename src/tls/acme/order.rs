//! One ACME order for one domain, HTTP-01 only: new order → publish the key
//! authorizations → tell the CA the challenges are ready → poll → CSR with a
//! fresh ECDSA P-256 key → finalize → poll → download the chain.
//!
//! Runs on the control-plane runtime. Every wait is a timer, every loop has a
//! deadline, and a published challenge is withdrawn however the future ends
//! (success, error, or being dropped on shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
};
use tracing::debug;

use super::challenges::{ChallengeGuard, Challenges};
use super::client::acme_call;
use super::schedule::Poll;
use super::{AcmeError, IssuedCert};

/// Longest time the CA may take to validate the challenges, and separately
/// to issue the certificate once finalized.
pub(crate) const ORDER_STAGE_TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) async fn issue(
    account: &Account,
    challenges: &Arc<Challenges>,
    domain: &str,
) -> Result<IssuedCert, AcmeError> {
    let identifiers = [Identifier::Dns(domain.to_owned())];
    let new_order = NewOrder {
        identifiers: &identifiers,
    };
    let mut order = acme_call!("new order", account.new_order(&new_order))?;
    debug!(domain, url = order.url(), "ACME order created");

    // Keep every published token until the CA has finished validating.
    let mut published: Vec<ChallengeGuard> = Vec::new();
    let authorizations = acme_call!("fetch authorizations", order.authorizations())?;
    for authz in &authorizations {
        match authz.status {
            AuthorizationStatus::Pending => {}
            // Reused from an earlier order: nothing to prove.
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::OrderFailed {
                    domain: domain.to_owned(),
                    detail: format!("authorization is {status:?}"),
                })
            }
        }
        let Some(challenge) = authz
            .challenges
            .iter()
            .find(|c| c.r#type == ChallengeType::Http01)
        else {
            return Err(AcmeError::OrderFailed {
                domain: domain.to_owned(),
                detail: "the CA offers no http-01 challenge".into(),
            });
        };
        let key_authorization = order.key_authorization(challenge);
        // Published before the CA is told to look.
        published.push(challenges.publish(&challenge.token, key_authorization.as_str()));
        acme_call!("challenge ready", order.set_challenge_ready(&challenge.url))?;
    }

    let status = wait_while(&mut order, domain, OrderStatus::Pending, "validating").await?;
    drop(published);
    match status {
        OrderStatus::Ready => {}
        OrderStatus::Invalid => {
            return Err(AcmeError::OrderFailed {
                domain: domain.to_owned(),
                detail: invalid_detail(&mut order).await,
            })
        }
        other => {
            return Err(AcmeError::OrderFailed {
                domain: domain.to_owned(),
                detail: format!("unexpected order status {other:?} after validation"),
            })
        }
    }

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        AcmeError::Csr {
            domain: domain.to_owned(),
            source,
        }
    })?;
    let csr = csr_der(domain, &key)?;
    acme_call!("finalize", order.finalize(&csr))?;

    let deadline = Instant::now() + ORDER_STAGE_TIMEOUT;
    let mut poll = Poll::new();
    let chain_pem = loop {
        if let Some(chain) = acme_call!("download certificate", order.certificate())? {
            break chain;
        }
        if Instant::now() >= deadline {
            return Err(AcmeError::Timeout {
                domain: domain.to_owned(),
                stage: "issuing",
            });
        }
        tokio::time::sleep(poll.next_delay()).await;
    };
    IssuedCert::from_pem(domain.to_owned(), chain_pem, key.serialize_pem())
}

/// A CSR for exactly `domain` (as the only SAN, empty subject).
fn csr_der(domain: &str, key: &rcgen::KeyPair) -> Result<Vec<u8>, AcmeError> {
    let csr_err = |source| AcmeError::Csr {
        domain: domain.to_owned(),
        source,
    };
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(csr_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(key).map_err(csr_err)?;
    Ok(csr.der().to_vec())
}

/// Refreshes the order until its status is no longer `while_status`.
async fn wait_while(
    order: &mut Order,
    domain: &str,
    while_status: OrderStatus,
    stage: &'static str,
) -> Result<OrderStatus, AcmeError> {
    let deadline = Instant::now() + ORDER_STAGE_TIMEOUT;
    let mut poll = Poll::new();
    loop {
        let status = acme_call!("poll order", order.refresh())?.status;
        if status != while_status {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(AcmeError::Timeout {
                domain: domain.to_owned(),
                stage,
            });
        }
        tokio::time::sleep(poll.next_delay()).await;
    }
}

/// The CA's explanation of why an order became invalid: the order's own
/// problem, else each failed challenge's problem.
async fn invalid_detail(order: &mut Order) -> String {
    let mut details: Vec<String> = Vec::new();
    if let Some(problem) = &order.state().error {
        details.push(problem.to_string());
    }
    if let Ok(authorizations) = acme_call!("fetch authorizations", order.authorizations()) {
        for authz in authorizations {
            for challenge in authz.challenges {
                if let Some(problem) = challenge.error {
                    details.push(format!("{:?}: {problem}", challenge.r#type));
                }
            }
        }
    }
    if details.is_empty() {
        "order is invalid (no detail from the CA)".into()
    } else {
        details.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_only_the_domain() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let der = csr_der("app.example", &key).expect("csr");
        // The SAN is in the DER as an IA5String dNSName.
        assert!(der.windows(11).any(|w| w == b"app.example"));
    }
}
