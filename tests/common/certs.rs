//! Certificates for the TLS tests (PostgreSQL, NATS): a CA made for the test and a server
//! certificate it signs for 127.0.0.1 and localhost.

/// A self-signed CA named `name`, with its key.
pub fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("ca key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).expect("ca cert"), key)
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`, with its key.
pub fn server_cert(
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, ca, ca_key)
        .expect("server cert");
    (cert, key)
}
