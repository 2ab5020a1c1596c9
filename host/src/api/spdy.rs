//! SPDY/3.1 framing, as much of it as `kubectl port-forward` speaks: the
//! client opens every stream, so the server reads SYN_STREAM, DATA,
//! RST_STREAM, PING and GOAWAY, and writes SYN_REPLY, DATA, RST_STREAM and
//! PING echoes. No maintained Rust crate speaks SPDY; this follows the
//! SPDY/3.1 draft and what kubectl's client (spdystream) sends and expects:
//!
//! - Frames: control `1 | version 3 (15 bits) | type (16) | flags (8) |
//!   length (24)`, data `0 | stream id (31) | flags (8) | length (24)`, then
//!   the payload; big-endian throughout.
//! - Header blocks (`count, then length-prefixed name and value pairs`, all
//!   32-bit) are zlib streams primed with the SPDY/3 dictionary, one stream
//!   per direction for the whole connection. The client's are real deflate
//!   with a sync flush per frame; berth's replies carry empty header blocks
//!   as stored (uncompressed) deflate blocks, each followed by the empty
//!   stored block of a sync flush, so the inflater reads exactly to the
//!   frame's end, as spdystream insists.
//! - No flow control: spdystream neither sends nor honours WINDOW_UPDATE.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is refused or abandoned.
pub const CANCEL: u32 = 5;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const NOOP: u16 = 5;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The largest frame berth takes: kubectl's DATA frames are 32 KiB at most,
/// and a peer announcing 16 MiB frames gets an error, not berth's memory.
const MAX_FRAME: usize = 1 << 20;
/// The most an inflated header block may hold.
const MAX_HEADER_BLOCK: usize = 64 << 10;

/// A frame as port-forward needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// SYN_REPLY, SETTINGS, NOOP, HEADERS, WINDOW_UPDATE: nothing a server
    /// of client-opened streams without flow control acts on.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
#[error("SPDY: {0}")]
pub struct SpdyError(String);

fn error(message: impl Into<String>) -> SpdyError {
    SpdyError(message.into())
}

/// Reads frames from a byte stream delivered in pieces of any size.
pub struct Reader {
    buffer: BytesMut,
    inflate: flate2::Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buffer: BytesMut::new(),
            inflate: flate2::Decompress::new(true),
        }
    }
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if it has arrived.
    pub fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let length =
            u32::from_be_bytes([0, self.buffer[5], self.buffer[6], self.buffer[7]]) as usize;
        if length > MAX_FRAME {
            return Err(error(format!(
                "a frame of {length} bytes is past the limit of {MAX_FRAME}"
            )));
        }
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let head = self.buffer.split_to(8);
        let mut payload = self.buffer.split_to(length).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                id,
                fin,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != 3 {
            return Err(error(format!("version {version}, not 3")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if length < n {
                Err(error(format!(
                    "a frame of type {kind} needs {n} bytes, has {length}"
                )))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10)?;
                let id = payload.get_u32() & 0x7fff_ffff;
                // The associated stream, priority and slot: unused here.
                payload.advance(6);
                let headers = self.headers(&payload)?;
                Frame::SynStream { id, fin, headers }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                payload.advance(4);
                // Inflated all the same: the zlib stream runs across frames.
                self.headers(&payload)?;
                Frame::Ignored
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            PING => {
                need(4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            GOAWAY => Frame::GoAway,
            SETTINGS | NOOP | WINDOW_UPDATE => Frame::Ignored,
            other => return Err(error(format!("unknown control frame type {other}"))),
        }))
    }

    /// Inflates one frame's header block and parses its pairs.
    fn headers(&mut self, mut compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut block: Vec<u8> = Vec::with_capacity(256);
        loop {
            if block.capacity() - block.len() < 256 {
                block.reserve(4096);
            }
            let (read, wrote) = (self.inflate.total_in(), self.inflate.total_out());
            let outcome =
                self.inflate
                    .decompress_vec(compressed, &mut block, flate2::FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - read) as usize;
            let produced = self.inflate.total_out() - wrote;
            compressed = &compressed[consumed..];
            match outcome {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| error(format!("header compression dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(error(format!("header block: {e}"))),
            }
            if block.len() > MAX_HEADER_BLOCK {
                return Err(error("a header block past 64 KiB"));
            }
            if compressed.is_empty() && block.len() < block.capacity() {
                break;
            }
            if consumed == 0 && produced == 0 {
                return Err(error("a truncated header block"));
            }
        }
        parse_pairs(&block)
    }
}

fn parse_pairs(mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn take<'a>(block: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
        if block.len() < 4 {
            return Err(error("a header block ends early"));
        }
        let length = block.get_u32() as usize;
        if block.len() < length {
            return Err(error("a header block ends early"));
        }
        let (field, rest) = block.split_at(length);
        *block = rest;
        Ok(field)
    }
    if block.len() < 4 {
        return Err(error("a header block ends early"));
    }
    let count = block.get_u32() as usize;
    // Each pair takes at least eight bytes: a count past that is a lie.
    if count > block.len() / 8 {
        return Err(error(format!("a header block claims {count} pairs")));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut block)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(take(&mut block)?).into_owned();
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u16(0x8003);
    frame.put_u16(kind);
    frame.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    frame.put_slice(payload);
    frame.freeze()
}

/// A DATA frame (at most [`MAX_FRAME`] bytes of `data`).
pub fn data(id: u32, fin: bool, data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + data.len());
    frame.put_u32(id & 0x7fff_ffff);
    frame.put_u32((u32::from(if fin { FLAG_FIN } else { 0 }) << 24) | data.len() as u32);
    frame.put_slice(data);
    frame.freeze()
}

pub fn rst_stream(id: u32, status: u32) -> Bytes {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&id.to_be_bytes());
    payload[4..].copy_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

/// The answer to the peer's PING: the same frame.
pub fn ping(id: u32) -> Bytes {
    control(PING, 0, &id.to_be_bytes())
}

/// Writes the frames whose header blocks share the connection's zlib
/// stream: berth's SYN_REPLYs.
#[derive(Default)]
pub struct Writer {
    started: bool,
}

impl Writer {
    /// A SYN_REPLY accepting stream `id`, with no headers.
    pub fn syn_reply(&mut self, id: u32) -> Bytes {
        const NO_HEADERS: [u8; 4] = [0; 4];
        let mut payload = Vec::with_capacity(20);
        payload.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        if !self.started {
            // The zlib header: deflate, 32 KiB window, a preset dictionary
            // (FDICT) named by its Adler-32.
            payload.extend_from_slice(&[0x78, 0xf9]);
            payload.extend_from_slice(&adler32(DICTIONARY).to_be_bytes());
            self.started = true;
        }
        // A stored block, not the last: BFINAL 0, BTYPE 00, then LEN and
        // its complement, little-endian, then the bytes as they are.
        let length = NO_HEADERS.len() as u16;
        payload.push(0);
        payload.extend_from_slice(&length.to_le_bytes());
        payload.extend_from_slice(&(!length).to_le_bytes());
        payload.extend_from_slice(&NO_HEADERS);
        // Then an empty stored block, the mark of a sync flush: Go's
        // inflater hands over what it holds only on reaching it (after a
        // block with data it reads on for the next block, past the frame).
        payload.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        control(SYN_REPLY, 0, &payload)
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// The dictionary SPDY/3 primes header compression with (the SPDY/3 draft,
/// section 2.6.10.1).
pub const DICTIONARY: &[u8; 1423] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\
\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\
\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03a\
ge\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\
\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10conten\
t-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-\
md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04\
etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\
\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\
\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08loca\
tion\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-aft\
er\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encodi\
ng\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\
\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\
\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\
\x00\x06origin1001012012022052063003023033043053063074024054064074084094104114124134144154164175\
02504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 U\
nauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Una\
vailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, \
Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,te\
xt/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,u\
tf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_one_the_draft_gives() {
        use sha2::Digest as _;
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(DICTIONARY)),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    /// A client's header block: the pairs deflated on one zlib stream
    /// primed with the dictionary, sync-flushed as spdystream does.
    struct Client {
        deflate: flate2::Compress,
    }

    impl Client {
        fn new() -> Client {
            let mut deflate = flate2::Compress::new(flate2::Compression::best(), true);
            deflate.set_dictionary(DICTIONARY).unwrap();
            Client { deflate }
        }

        fn block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
            let mut raw = Vec::new();
            raw.put_u32(pairs.len() as u32);
            for (name, value) in pairs {
                raw.put_u32(name.len() as u32);
                raw.put_slice(name.as_bytes());
                raw.put_u32(value.len() as u32);
                raw.put_slice(value.as_bytes());
            }
            let mut out = Vec::with_capacity(raw.len() + 64);
            self.deflate
                .compress_vec(&raw, &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out
        }

        fn syn_stream(&mut self, id: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
            let mut payload = Vec::new();
            payload.put_u32(id);
            payload.put_u32(0);
            payload.put_u16(0);
            payload.extend(self.block(pairs));
            control(SYN_STREAM, 0, &payload).to_vec()
        }
    }

    #[test]
    fn syn_streams_on_one_zlib_stream_are_read_in_pieces_of_any_size() {
        let mut client = Client::new();
        let mut wire = client.syn_stream(
            1,
            &[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ],
        );
        wire.extend(data(1, true, b"").to_vec());
        wire.extend(client.syn_stream(
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        wire.extend(data(3, false, b"GET / HTTP/1.1\r\n\r\n").to_vec());
        wire.extend(ping(1).to_vec());
        wire.extend(rst_stream(3, CANCEL).to_vec());
        for piece in [1, 2, 3, 7, wire.len()] {
            let mut reader = Reader::default();
            let mut frames = Vec::new();
            for chunk in wire.chunks(piece) {
                reader.push(chunk);
                while let Some(frame) = reader.next().unwrap() {
                    frames.push(frame);
                }
            }
            let pairs = |kind: &str| {
                vec![
                    ("streamtype".to_owned(), kind.to_owned()),
                    ("port".to_owned(), "8080".to_owned()),
                    ("requestid".to_owned(), "0".to_owned()),
                ]
            };
            assert_eq!(
                frames,
                [
                    Frame::SynStream {
                        id: 1,
                        fin: false,
                        headers: pairs("error")
                    },
                    Frame::Data {
                        id: 1,
                        fin: true,
                        data: Bytes::new()
                    },
                    Frame::SynStream {
                        id: 3,
                        fin: false,
                        headers: pairs("data")
                    },
                    Frame::Data {
                        id: 3,
                        fin: false,
                        data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n")
                    },
                    Frame::Ping { id: 1 },
                    Frame::RstStream {
                        id: 3,
                        status: CANCEL
                    },
                ],
                "in pieces of {piece}"
            );
        }
    }

    #[test]
    fn replies_inflate_as_one_zlib_stream_with_the_dictionary() {
        let mut writer = Writer::default();
        let frames = [writer.syn_reply(1), writer.syn_reply(3)];
        assert_eq!(
            hex::encode(&frames[0]),
            "80030002000000180000000178f9e3c6a7c2000400fbff00000000000000ffff"
        );
        let mut inflate = flate2::Decompress::new(true);
        for frame in &frames {
            assert_eq!(&frame[..4], &[0x80, 0x03, 0x00, 0x02]);
            let length = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
            assert_eq!(length, frame.len() - 8);
            let block = &frame[12..];
            let mut out = Vec::with_capacity(64);
            let before = inflate.total_in();
            match inflate.decompress_vec(block, &mut out, flate2::FlushDecompress::Sync) {
                Err(e) if e.needs_dictionary().is_some() => {
                    inflate.set_dictionary(DICTIONARY).unwrap();
                    let rest = &block[(inflate.total_in() - before) as usize..];
                    inflate
                        .decompress_vec(rest, &mut out, flate2::FlushDecompress::Sync)
                        .unwrap();
                }
                other => {
                    other.unwrap();
                }
            }
            assert_eq!(
                inflate.total_in() - before,
                block.len() as u64,
                "the whole block, no more"
            );
            assert_eq!(out, [0, 0, 0, 0], "no headers");
            assert!(frame.ends_with(&[0, 0, 0xff, 0xff]), "a sync flush");
        }
    }

    #[test]
    fn hostile_frames_are_errors_not_allocations() {
        let mut reader = Reader::default();
        reader.push(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]);
        assert!(reader.next().is_err(), "16 MiB frame");
        let mut reader = Reader::default();
        reader.push(&control(42, 0, &[]));
        assert!(reader.next().is_err(), "unknown type");
        let mut reader = Reader::default();
        reader.push(&control(
            SYN_STREAM,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3],
        ));
        assert!(reader.next().is_err(), "garbage header block");
        assert!(
            parse_pairs(&[0xff, 0xff, 0xff, 0xff]).is_err(),
            "a huge count"
        );
    }
}
