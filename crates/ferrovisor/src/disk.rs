//! `--disk path=IMG[,readonly=on|off][,id=ID][,format=raw|qcow2|auto]
//! [,cache=writeback|writethrough|none|directsync|unsafe]`.
//!
//! The format is raw unless given: `auto` detects qcow2 by its magic,
//! which only an image no guest ever wrote should use (a guest can write
//! the magic into a raw disk).

use std::path::PathBuf;

use vmm::DiskConfig;

/// Parses one `--disk` value.
pub(crate) fn parse_disk(value: &str) -> Result<DiskConfig, String> {
    let mut path = None;
    let mut read_only = false;
    let mut id = None;
    let mut image = virtio::blk_image::ImageOptions::default();
    let mut limits = crate::limits::LimitOptions::default();
    for option in value.split(',') {
        let Some((key, val)) = option.split_once('=') else {
            return Err(format!(
                "'{option}' is not KEY=VALUE (path=IMG[,readonly=on][,id=ID])"
            ));
        };
        match key {
            "path" if !val.is_empty() => path = Some(PathBuf::from(val)),
            "path" => return Err("path= is empty".to_string()),
            "readonly" | "ro" => {
                read_only = match val {
                    "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(format!("readonly={val}: use on or off")),
                }
            }
            "id" if val.is_empty() => return Err("id= is empty".to_string()),
            "id" if val.len() > virtio::blk::ID_BYTES => {
                return Err(format!(
                    "id={val} is longer than {} bytes",
                    virtio::blk::ID_BYTES
                ))
            }
            "id" => id = Some(val.to_string()),
            "format" => {
                image.format = virtio::blk_image::ImageFormat::parse(val)
                    .ok_or_else(|| format!("format={val}: use raw, qcow2 or auto"))?
            }
            "cache" => {
                image.cache = virtio::blk_image::CacheMode::parse(val).ok_or_else(|| {
                    format!("cache={val}: use {}", virtio::blk_image::CacheMode::NAMES)
                })?
            }
            _ if limits.take(key, key, val)? => {}
            _ => {
                return Err(format!(
                    "unknown option '{key}' (path, readonly, id, format, cache, {})",
                    crate::limits::NAMES
                ))
            }
        }
    }
    let path = path.ok_or("path=IMG is missing")?;
    let rate_limiter = limits.finish("")?;
    Ok(DiskConfig {
        path,
        read_only,
        id,
        rate_limiter,
        image,
    })
}

/// The first disk ID given twice.
pub(crate) fn duplicate_id(disks: &[DiskConfig]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    disks
        .iter()
        .filter_map(|d| d.id.as_deref())
        .find(|id| !seen.insert(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_read_only_and_ids() {
        let d = parse_disk("path=/a.img").unwrap();
        assert_eq!(d.path, PathBuf::from("/a.img"));
        assert!(!d.read_only);
        assert_eq!(d.id, None);
        let d = parse_disk("path=/b.img,readonly=on,id=data").unwrap();
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("data"));
        use virtio::blk_image::{CacheMode, ImageFormat};
        assert_eq!(d.image, Default::default());
        let d = parse_disk("path=/c.qcow2,format=qcow2,cache=none").unwrap();
        assert_eq!(d.image.format, ImageFormat::Qcow2);
        assert_eq!(d.image.cache, CacheMode::None);
        let d = parse_disk("path=/c,format=auto,cache=directsync").unwrap();
        assert_eq!(d.image.format, ImageFormat::Auto);
        assert_eq!(d.image.cache, CacheMode::Directsync);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for bad in [
            "",
            "/a.img",
            "id=x",
            "path=",
            "path=/a,readonly=maybe",
            "path=/a,cache=fast",
            "path=/a,format=vmdk",
            "path=/a,id=",
            "path=/a,id=abcdefghijklmnopqrstuvwxyz",
        ] {
            let err = parse_disk(bad).unwrap_err();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
        let disks = [
            parse_disk("path=/a,id=x").unwrap(),
            parse_disk("path=/b").unwrap(),
            parse_disk("path=/c,id=x").unwrap(),
        ];
        assert_eq!(duplicate_id(&disks), Some("x"));
        assert_eq!(duplicate_id(&disks[..2]), None);
    }
}
