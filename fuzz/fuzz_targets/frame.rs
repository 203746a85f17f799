//! The gateway's RFC 6455 frame parser (`pulse_gateway::frame::parse`), the
//! first code that touches every byte a client sends after the upgrade: any
//! input is an answer (a frame, "more bytes", or a close reason), never a
//! panic; what it takes is within what it was given; and a frame it accepts
//! parses the same from exactly its own bytes, and again when re-masked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_gateway::frame::{encode_masked, parse};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit, so small and large limits both get hit.
    let Some((&limit, bytes)) = data.split_first() else {
        return;
    };
    let max_frame = usize::from(limit) * 4;
    match parse(bytes, max_frame) {
        Ok(Ok((frame, used))) => {
            assert!(used <= bytes.len());
            assert!(frame.payload.len() <= max_frame);
            let (again, used_again) = parse(&bytes[..used], max_frame)
                .expect("the same bytes parse again")
                .expect("and are whole");
            assert_eq!(
                (again.fin, again.opcode, &again.payload),
                (frame.fin, frame.opcode, &frame.payload)
            );
            assert_eq!(used_again, used);
            let first = if frame.fin { 0x80 } else { 0 } | frame.opcode.bits();
            let remasked = encode_masked(first, &frame.payload, [0x5a, 0x0f, 0xf0, 0xa5]);
            let (third, _) = parse(&remasked, max_frame)
                .expect("a re-masked frame parses")
                .expect("and is whole");
            assert_eq!(third.payload, frame.payload);
        }
        Ok(Err(Some(needed))) => assert!(needed > bytes.len()),
        Ok(Err(None)) | Err(_) => {}
    }
});
