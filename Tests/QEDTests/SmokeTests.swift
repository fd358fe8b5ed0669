import Foundation
import QED
import TestSupport
import Testing

@Test func smokeCreateWriteRead() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qed-smoke-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/a.qed"
    try Image.create(path: path, options: CreateOptions(size: 16 << 20))
    let image = try openImage(path)  // (retries a lock a spawning child still holds)
    try image.write([UInt8](repeating: 0xab, count: 512), at: 4096)
    try image.write([UInt8](repeating: 0xcd, count: 70000), at: 1 << 20)
    try image.writeZeroes(at: 4 << 20, length: 128 << 10)
    let back = try image.read(at: 4096, count: 512)
    #expect(back == [UInt8](repeating: 0xab, count: 512))
    let report = try image.check()
    #expect(report.isClean)
    try image.close()
    print("SMOKE", path)
}
