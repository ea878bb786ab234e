//! Certificates for tests, made with `openssl` at test time: a CA of the test's own and
//! server certificates it signs, for localhost and 127.0.0.1.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// A certificate authority whose files live in a test's directory.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// The CA of `dir`: `ca.pem` and `ca.key` there, made on first use.
    pub fn in_dir(dir: &Path) -> Self {
        let ca = Self {
            dir: dir.to_owned(),
        };
        if !ca.ca().exists() {
            ca.openssl(&[
                "req",
                "-x509",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=tideway test CA",
            ]);
        }
        ca
    }

    /// The CA's certificate, which clients of the servers it signs trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `<stem>.pem` and `<stem>.key` in the directory: a certificate with common
    /// name `cn` for localhost and 127.0.0.1, signed by the CA.
    pub fn issue(&self, stem: &str, cn: &str) {
        let (key, csr, pem) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.pem"),
        );
        let subject = format!("/CN={cn}");
        self.openssl(&[
            "req",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]);
        std::fs::write(
            self.dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write the extension file");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "san.ext",
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success(), "openssl {args:?} failed");
    }
}
