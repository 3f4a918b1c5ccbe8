//! A minimal QMP client: enough to ask QEMU for an ACPI power-button press.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// Bound on one QMP reply line; QEMU's replies to our commands are tiny.
const MAX_LINE: usize = 64 * 1024;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    negotiated: bool,
}

impl Qmp {
    pub fn new(stream: UnixStream) -> Result<Self> {
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("Failed to set up QMP", e))?;
        Ok(Qmp {
            reader: BufReader::new(stream),
            writer,
            negotiated: false,
        })
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .map_err(|e| Error::io("Failed to read from QMP", e))?;
        if read == 0 {
            return Err(Error::new("QMP connection closed by QEMU"));
        }
        serde_json::from_str(&line).map_err(|e| Error::new(format!("Invalid QMP message: {e}")))
    }

    /// Sends one command and waits for its reply, skipping asynchronous events.
    fn execute(&mut self, command: &str) -> Result<Value> {
        let request = serde_json::json!({ "execute": command });
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| Error::io("Failed to write to QMP", e))?;
        loop {
            let message = self.read_message()?;
            if let Some(error) = message.get("error") {
                return Err(Error::new(format!(
                    "QMP command '{command}' failed: {error}"
                )));
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
        }
    }

    /// Presses the virtual ACPI power button.
    pub fn system_powerdown(&mut self, timeout: Duration) -> Result<()> {
        self.writer.set_read_timeout(Some(timeout)).ok();
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok();
        if !self.negotiated {
            let greeting = self.read_message()?;
            if greeting.get("QMP").is_none() {
                return Err(Error::new("QEMU did not greet with QMP"));
            }
            self.execute("qmp_capabilities")?;
            self.negotiated = true;
        }
        self.execute("system_powerdown").map(drop)
    }
}

use std::io::Read as _;
