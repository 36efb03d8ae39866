//! QEMU's property lists (`QemuOpts`): `[VALUE,]KEY=VALUE,KEY=VALUE...`,
//! where a comma inside a value is written `,,` and the first item may
//! omit its key (the option's implied key: `-machine q35` is
//! `-machine type=q35`). A key without `=` is `KEY=on` (`-machine
//! q35,usb`), as QEMU reads it; `help` or `?` alone asks for help.
//!
//! A [`Props`] is consumed by the option that reads it: each `take`
//! removes the property, and [`Props::finish`] refuses any left over,
//! naming it — an unsupported property is an error, never ignored.

use super::QemuError;

/// One option's properties, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Props {
    /// Which option they belong to, for messages (`-device`, `-drive`).
    option: String,
    items: Vec<(String, String)>,
}

/// Splits `text` at single commas; `,,` is a literal comma.
fn split(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(s) = items.last_mut() {
                    s.push(',');
                }
            } else {
                items.push(String::new());
            }
        } else if let Some(s) = items.last_mut() {
            s.push(c);
        }
    }
    items
}

impl Props {
    /// Parses `text`, the value of `option`; an item without `=` in the
    /// first place is the value of `implied` (when the option has one).
    pub fn parse(option: &str, text: &str, implied: Option<&str>) -> Result<Props, QemuError> {
        let mut items = Vec::new();
        for (i, item) in split(text).into_iter().enumerate() {
            if item.is_empty() {
                // QEMU accepts a trailing comma; an empty item elsewhere
                // is an empty key.
                if i > 0 {
                    continue;
                }
                if implied.is_some() {
                    return Err(QemuError::new(format!("{option}: the value is empty")));
                }
                continue;
            }
            match item.split_once('=') {
                Some((key, value)) => {
                    if key.is_empty() {
                        return Err(QemuError::new(format!(
                            "{option}: '{item}': a property needs a name"
                        )));
                    }
                    items.push((key.to_string(), value.to_string()));
                }
                None if i == 0 && implied.is_some() => {
                    items.push((implied.unwrap_or_default().to_string(), item));
                }
                // `?` and `help` stay keys: the caller asks has_help().
                None => items.push((item, "on".to_string())),
            }
        }
        let props = Props {
            option: option.to_string(),
            items,
        };
        for (key, _) in &props.items {
            if props.items.iter().filter(|(k, _)| k == key).count() > 1 {
                return Err(QemuError::new(format!(
                    "{option}: property '{key}' given twice"
                )));
            }
        }
        Ok(props)
    }

    /// Whether `help` or `?` is one of the items (`-device foo,help`).
    pub fn has_help(&self) -> bool {
        self.items
            .iter()
            .any(|(k, v)| (k == "help" || k == "?") && v == "on")
    }

    /// Removes and returns `key`'s value.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let at = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(at).1)
    }

    /// Removes `key` and reads it as QEMU's booleans (on/off, yes/no,
    /// true/false).
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, QemuError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_bool(&v).map(Some).ok_or_else(|| {
                QemuError::new(format!(
                    "{}: property '{key}' takes on or off, not '{v}'",
                    self.option
                ))
            }),
        }
    }

    /// Removes `key`, a number (decimal, or hexadecimal with 0x).
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>, QemuError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_u64(&v).map(Some).ok_or_else(|| {
                QemuError::new(format!(
                    "{}: property '{key}' takes a number, not '{v}'",
                    self.option
                ))
            }),
        }
    }

    /// Removes `key`, which must be there.
    pub fn require(&mut self, key: &str, what: &str) -> Result<String, QemuError> {
        self.take(key)
            .ok_or_else(|| QemuError::new(format!("{}: {what} needs {key}=", self.option)))
    }

    /// Refuses what no `take` consumed: `what` is the thing being
    /// configured (`-device virtio-blk-pci`).
    pub fn finish(self, what: &str) -> Result<(), QemuError> {
        match self.items.first() {
            None => Ok(()),
            Some((key, value)) => Err(QemuError::new(format!(
                "{what}: property '{key}={value}' is not supported by Ferrovisor"
            ))),
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "true" | "y" => Some(true),
        "off" | "no" | "false" | "n" => Some(false),
        _ => None,
    }
}

pub fn parse_u64(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implied_key_escaped_commas_and_flags() {
        let mut p = Props::parse("-drive", "file=a,,b.img,if=none,readonly", None).unwrap();
        assert_eq!(p.take("file").as_deref(), Some("a,b.img"));
        assert_eq!(p.take("if").as_deref(), Some("none"));
        assert_eq!(p.take_bool("readonly").unwrap(), Some(true));
        p.finish("-drive").unwrap();

        let mut p = Props::parse("-machine", "q35,accel=tcg,pit=off,", Some("type")).unwrap();
        assert_eq!(p.take("type").as_deref(), Some("q35"));
        assert_eq!(p.take("accel").as_deref(), Some("tcg"));
        assert_eq!(p.take_bool("pit").unwrap(), Some(false));
        p.finish("-machine").unwrap();
    }

    #[test]
    fn leftovers_duplicates_and_bad_values_are_errors() {
        let mut p = Props::parse("-device", "virtio-rng-pci,foo=1", Some("driver")).unwrap();
        p.take("driver");
        let e = p.finish("-device virtio-rng-pci").unwrap_err();
        assert!(e.to_string().contains("'foo=1'"), "{e}");
        assert!(Props::parse("-m", "size=1G,size=2G", Some("size")).is_err());
        let mut p = Props::parse("-device", "x,iobase=0xf4,iosize=four", Some("driver")).unwrap();
        assert_eq!(p.take_u64("iobase").unwrap(), Some(0xf4));
        assert!(p.take_u64("iosize").is_err());
        let mut p = Props::parse("-machine", "pit=maybe", Some("type")).unwrap();
        assert!(p.take_bool("pit").is_err());
    }

    #[test]
    fn help_is_recognised() {
        assert!(Props::parse("-device", "help", Some("driver")).is_ok());
        assert!(
            Props::parse("-device", "virtio-blk-pci,help", Some("driver"))
                .unwrap()
                .has_help()
        );
        assert!(Props::parse("-device", "e1000,?", Some("driver"))
            .unwrap()
            .has_help());
    }
}
