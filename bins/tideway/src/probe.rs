//! `tideway probe`: asks a running gateway's `/healthz` (or another path) and exits 0 when
//! it answers 200, so container health checks need no curl in the image.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Probes `path` on the gateway listening at `listen` (an unspecified address such as
/// `0.0.0.0` means this host). Returns the status line on success.
pub(crate) fn probe(listen: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| anyhow::anyhow!("no gateway answers at {addr}: {err}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    // Only the status line matters; stop reading once it is here.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default().to_owned();
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(status_line)
    } else {
        anyhow::bail!("{addr}{path} answered {status_line:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_fails_the_probe() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        assert!(probe(addr, "/healthz").is_err());
    }

    #[test]
    fn a_200_passes_and_anything_else_fails() {
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
        ] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                // Read the whole request, so closing sends FIN, not a reset.
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    request.push(byte[0]);
                }
                stream.write_all(answer.as_bytes()).unwrap();
            });
            assert_eq!(probe(addr, "/readyz").is_ok(), ok, "{answer:?}");
            server.join().unwrap();
        }
    }
}
