import Foundation
import Testing

extension Sandbox {
    /// base.raw (1 MiB: 0x11 in 0..256k, 0x22 in 512k..576k, holes elsewhere) under ov.qed
    /// (2 MiB, made by qemu: data, zero clusters, a cluster rewritten inside a zero range,
    /// and ranges past the backing file's end).
    func makeOverlayOnRaw() throws {
        try mustQemu("create", "-f", "raw", "base.raw", "1M")
        try qemuIO("-f", "raw", "-c", "write -P 0x11 0 256k", "-c", "write -P 0x22 512k 64k", "base.raw")
        try mustQemu("create", "-f", "qed", "-b", "base.raw", "-F", "raw", "ov.qed", "2M")
        try qemuIO(
            "-c", "write -P 0x33 64k 64k", "-c", "write -z 128k 128k", "-c", "write -P 0x44 1536k 4k",
            "-c", "write -P 5 128k 4k", "ov.qed")
    }

    /// A three-level QED chain made by qed-img: b1.qed (1 MiB) <- mid.qed (1.5 MiB) <- top.qed (2 MiB).
    func makeQEDChain() throws {
        try mustOurs("create", "-f", "qed", "b1.qed", "1M")
        try mustOurs("io", "-c", "write -P 0x61 0 64k", "-c", "write -P 0x62 700k 8k", "b1.qed")
        try mustOurs("create", "-f", "qed", "-b", "b1.qed", "-F", "qed", "mid.qed", "1536k")
        try mustOurs("io", "-c", "write -P 0x71 256k 64k", "-c", "write -z 640k 64k", "mid.qed")
        try mustOurs("create", "-f", "qed", "-b", "mid.qed", "-F", "qed", "top.qed", "2M")
        try mustOurs("io", "-c", "write -P 0x81 1M 4k", "-c", "write -P 0x82 20k 1k", "top.qed")
    }
}
