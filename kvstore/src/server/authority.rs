//! Accepts grpc-go clients that send a URL as the HTTP/2 `:authority`.
//!
//! etcdctl 3.4 dials some calls (`endpoint status`) with the endpoint exactly as given,
//! so a client using `--endpoints http://127.0.0.1:2379` sends the `:authority`
//! `http://127.0.0.1:2379`. etcd's Go server takes it; the h2 crate resets the stream
//! (PROTOCOL_ERROR). [`FixAuthority`] wraps a plaintext client connection and, before h2
//! reads them, rewrites such values in the client's header blocks to `host:port`.
//!
//! The rewrite keeps the decoded length (the port is padded with leading zeros, which
//! still parses as the same port): HPACK's dynamic table accounts entries by decoded
//! length, so the client's table and h2's stay the same size and every later index
//! still means the same field. Only literal `:authority` fields are touched; a block
//! that needs no change, or that cannot be parsed, passes through byte for byte.
//!
//! A client sends its authority in its first request, so a connection whose first
//! header block needs nothing is passed through untouched from then on (no copies).

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const END_STREAM: u8 = 0x1;
/// The frame size every HTTP/2 peer accepts.
const MAX_FRAME: usize = 16_384;

/// A header block split over HEADERS and CONTINUATION frames, still being collected.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to pass on unchanged when nothing is rewritten.
    raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Until the first header block: does it need rewriting?
    Inspect,
    /// It did: every header block is checked.
    Rewrite,
    /// Bytes pass straight through.
    Pass,
}

/// See the module documentation. With `rewrite` off it only passes bytes through (a TLS
/// connection, whose bytes are encrypted at this level).
pub struct FixAuthority<S> {
    inner: S,
    mode: Mode,
    /// Scratch space for reads while frames are parsed.
    chunk: Box<[u8]>,
    /// Bytes read from `inner` not yet processed.
    input: BytesMut,
    /// Processed bytes for the reader.
    output: BytesMut,
    preface_left: usize,
    block: Option<Block>,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S, rewrite: bool) -> Self {
        FixAuthority {
            inner,
            mode: if rewrite { Mode::Inspect } else { Mode::Pass },
            chunk: if rewrite {
                vec![0; 16 * 1024].into_boxed_slice()
            } else {
                Box::default()
            },
            input: BytesMut::new(),
            output: BytesMut::new(),
            preface_left: PREFACE_LEN,
            block: None,
            eof: false,
        }
    }

    /// Moves every complete unit (preface, frame, header block) from input to output.
    fn process(&mut self) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.input.len());
            self.output.extend_from_slice(&self.input.split_to(n));
            self.preface_left -= n;
        }
        while self.mode != Mode::Pass && self.preface_left == 0 && self.input.len() >= FRAME_HEADER
        {
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if self.input.len() < FRAME_HEADER + len {
                break;
            }
            let frame = self.input.split_to(FRAME_HEADER + len);
            self.frame(&frame);
        }
    }

    fn frame(&mut self, frame: &[u8]) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.take()) {
            (HEADERS, None) => {
                let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                    self.output.extend_from_slice(frame);
                    return;
                };
                let block = Block {
                    stream,
                    flags,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: frame.to_vec(),
                };
                self.collect(block, flags);
            }
            (CONTINUATION, Some(mut block)) if block.stream == stream => {
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(frame);
                self.collect(block, flags);
            }
            // Anything else interleaved with a header block is the peer's protocol error:
            // pass it all on for h2 to refuse.
            (_, pending) => {
                if let Some(b) = pending {
                    self.output.extend_from_slice(&b.raw);
                }
                self.output.extend_from_slice(frame);
            }
        }
    }

    fn collect(&mut self, block: Block, flags: u8) {
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return;
        }
        match rewrite_block(&block.fragment) {
            Some(fragment) => {
                self.mode = Mode::Rewrite;
                self.emit(&block, &fragment);
            }
            None => {
                self.output.extend_from_slice(&block.raw);
                if self.mode == Mode::Inspect {
                    self.mode = Mode::Pass;
                    // The rest needs no framing: hand it on as it is.
                    let rest = self.input.split();
                    self.output.extend_from_slice(&rest);
                }
            }
        }
    }

    /// Writes a rewritten header block as HEADERS (+ CONTINUATION) frames, unpadded.
    fn emit(&mut self, block: &Block, fragment: &[u8]) {
        let mut first = Vec::with_capacity(fragment.len() + 5);
        if let Some(p) = block.priority {
            first.extend_from_slice(&p);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = fragment.split_at(fragment.len().min(room));
        first.extend_from_slice(head);
        let mut flags = block.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.put_frame(HEADERS, flags, block.stream, &first);
        while !rest.is_empty() {
            let (part, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.put_frame(CONTINUATION, flags, block.stream, part);
        }
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.output.put_slice(&len.to_be_bytes()[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream);
        self.output.put_slice(payload);
    }
}

/// A HEADERS payload without its padding: the priority fields, if any, and the fragment.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// An HPACK integer with an `n`-bit prefix at `b[*at]`.
fn integer(b: &[u8], at: &mut usize, n: u8) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = usize::from(*b.get(*at)?) & max;
    *at += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return (byte & 0x80 == 0).then_some(v);
        }
    }
}

/// An HPACK string at `b[*at]`: its decoded bytes and where its encoding started.
fn string(b: &[u8], at: &mut usize) -> Option<(Vec<u8>, usize)> {
    let start = *at;
    let huffman = *b.get(*at)? & 0x80 != 0;
    let len = integer(b, at, 7)?;
    let raw = b.get(*at..at.checked_add(len)?)?;
    *at += len;
    let value = if huffman {
        hpack::huffman::HuffmanDecoder::new().decode(raw).ok()?
    } else {
        raw.to_vec()
    };
    Some((value, start))
}

/// `scheme://host:port` as `host:port` of the same length (the port zero-padded);
/// None for anything else.
fn same_length_authority(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))?;
    let (host, port) = rest.rsplit_once(':')?;
    if host.is_empty() || host.contains(['/', '@']) || port.parse::<u16>().is_err() {
        return None;
    }
    let width = value.len() - host.len() - 1;
    Some(format!("{host}:{port:0>width$}").into_bytes())
}

/// The header block with every literal URL-shaped `:authority` made `host:port`, or None
/// when nothing needs to change (or the block does not parse: h2 then judges it).
fn rewrite_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        let name_index = if b & 0x80 != 0 {
            integer(block, &mut at, 7)?; // indexed field
            continue;
        } else if b & 0xc0 == 0x40 {
            integer(block, &mut at, 6)? // literal, incremental indexing
        } else if b & 0xe0 == 0x20 {
            integer(block, &mut at, 5)?; // dynamic table size update
            continue;
        } else {
            integer(block, &mut at, 4)? // literal without / never indexing
        };
        let authority = if name_index == 0 {
            string(block, &mut at)?.0 == b":authority"
        } else {
            name_index == 1 // the static table's `:authority`
        };
        let (value, start) = string(block, &mut at)?;
        if !authority {
            continue;
        }
        if let Some(fixed) = same_length_authority(&value) {
            out.extend_from_slice(&block[copied..start]);
            // A plain (not Huffman) string literal.
            let mut len = Vec::new();
            let max = 0x7f;
            if fixed.len() < max {
                len.push(fixed.len() as u8);
            } else {
                len.push(max as u8);
                let mut rest = fixed.len() - max;
                while rest >= 0x80 {
                    len.push((rest as u8 & 0x7f) | 0x80);
                    rest >>= 7;
                }
                len.push(rest as u8);
            }
            out.extend_from_slice(&len);
            out.extend_from_slice(&fixed);
            copied = at;
        }
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&block[copied..]);
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.mode == Mode::Pass && this.output.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // An unfinished frame at the end: h2 sees it as it was.
                if let Some(b) = this.block.take() {
                    this.output.extend_from_slice(&b.raw);
                }
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut read = ReadBuf::new(&mut this.chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(read.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for FixAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A literal with incremental indexing of the static `:authority` name.
    fn authority_literal(value: &str) -> Vec<u8> {
        let mut b = vec![0x41, value.len() as u8];
        b.extend_from_slice(value.as_bytes());
        b
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// What h2 would read of `wire` sent by a client in small pieces, and the final mode.
    async fn through(wire: Vec<u8>) -> (Vec<u8>, Mode) {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&wire).await.unwrap();
        });
        let mut fixed = FixAuthority::new(server, true);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        (got, fixed.mode)
    }

    #[test]
    fn a_url_authority_becomes_host_and_port_of_the_same_length() {
        let url = "http://127.0.0.1:2379";
        let fixed = same_length_authority(url.as_bytes()).unwrap();
        assert_eq!(fixed, b"127.0.0.1:00000002379");
        assert_eq!(fixed.len(), url.len());
        let parsed: hyper::http::uri::Authority =
            std::str::from_utf8(&fixed).unwrap().parse().unwrap();
        assert_eq!(parsed.port_u16(), Some(2379));
        assert!(same_length_authority(b"127.0.0.1:2379").is_none());
        assert!(same_length_authority(b"http://host").is_none());
        assert!(same_length_authority(b"http://host:2379/path").is_none());
    }

    #[test]
    fn only_literal_authorities_change() {
        // :method GET (indexed), :authority literal, then a Huffman-coded custom value
        // (RFC 7541 C.4.1's "www.example.com") that must pass untouched.
        let mut block = vec![0x82];
        block.extend(authority_literal("http://127.0.0.1:2379"));
        block.extend([0x40, 0x01, b'x', 0x8c]);
        block.extend([
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ]);
        let out = rewrite_block(&block).unwrap();
        let mut expected = vec![0x82];
        expected.extend(authority_literal("127.0.0.1:00000002379"));
        expected.extend_from_slice(&block[1 + 2 + 21..]);
        assert_eq!(out, expected);
        // Nothing to change: no copy.
        assert!(rewrite_block(&expected).is_none());
        // Truncated: left for h2 to judge.
        assert!(rewrite_block(&block[..5]).is_none());
    }

    #[tokio::test]
    async fn a_connection_gets_rewritten_headers_and_everything_else_unchanged() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        wire.extend(&settings);
        // A padded HEADERS with priority, continued in a CONTINUATION frame.
        let block = authority_literal("http://127.0.0.1:2379");
        let mut headers = vec![2u8]; // pad length
        headers.extend([0x80, 0, 0, 0, 16]); // priority
        headers.extend(&block[..4]);
        headers.extend([0, 0]); // padding
        wire.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &headers));
        wire.extend(frame(CONTINUATION, END_HEADERS, 1, &block[4..]));
        let data = frame(0x0, END_STREAM, 1, b"payload");
        wire.extend(&data);
        let (got, _) = through(wire).await;

        let mut expected = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        expected.extend(&settings);
        let mut payload = vec![0x80, 0, 0, 0, 16];
        payload.extend(authority_literal("127.0.0.1:00000002379"));
        expected.extend(frame(
            HEADERS,
            PRIORITY | END_STREAM | END_HEADERS,
            1,
            &payload,
        ));
        expected.extend(&data);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_connection_whose_first_request_needs_nothing_passes_through() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &authority_literal("127.0.0.1:2379"),
        ));
        wire.extend(frame(0x0, END_STREAM, 1, b"payload"));
        let (got, mode) = through(wire.clone()).await;
        assert_eq!(got, wire);
        assert_eq!(mode, Mode::Pass);
    }
}
