//! The gateway's RFC 6455 frame parser (`pulse_gateway::frame::parse`), the
//! first code that touches every byte a client sends after the upgrade: any
//! input is an answer (a frame, "more bytes", or a close reason), never a
//! panic; what it takes is within what it was given; and a frame it accepts
//! parses the same from exactly its own bytes, and again when re-masked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_gateway::frame::{OpCode, parse};

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
            let remasked = masked(
                frame.fin,
                frame.opcode,
                &frame.payload,
                [0x5a, 0x0f, 0xf0, 0xa5],
            );
            let (third, _) = parse(&remasked, max_frame)
                .expect("a re-masked frame parses")
                .expect("and is whole");
            assert_eq!(third.payload, frame.payload);
        }
        Ok(Err(Some(needed))) => assert!(needed > bytes.len()),
        Ok(Err(None)) | Err(_) => {}
    }
});

fn masked(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let bits = match opcode {
        OpCode::Continuation => 0x0,
        OpCode::Text => 0x1,
        OpCode::Binary => 0x2,
        OpCode::Close => 0x8,
        OpCode::Ping => 0x9,
        OpCode::Pong => 0xA,
    };
    let mut frame = vec![if fin { 0x80 } else { 0 } | bits];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
