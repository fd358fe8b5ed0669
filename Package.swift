// swift-tools-version:6.1
// swift-qed: a QEMU-compatible QED image engine, a qemu-img-style CLI and an NBD server.

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-qed",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "QED", targets: ["QED"]),
        .library(name: "NBD", targets: ["NBD"]),
        .executable(name: "qed-img", targets: ["qed-img"]),
        .executable(name: "qed-nbd", targets: ["qed-nbd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // TLS for qed-nbd (STARTTLS); vendors BoringSSL, so only the server target depends on it.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        // Linux calls Swift's Glibc module lacks (fallocate, SEEK_DATA, OFD locks).
        .target(name: "CQEDSys"),
        // The engine: on-disk format, file layer, read/write paths, check. Knows nothing of NIO or the CLI.
        .target(
            name: "QED",
            dependencies: [
                "CQEDSys",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // qemu-img's verbs over the engine (convert, compare, commit, rebase, measure, dd, bench, map,
        // info, check), one folder each, plus cancellation, progress and a worker pool. Only the
        // CLI uses it: the NBD server needs the engine alone.
        .target(name: "QEDTools", dependencies: ["QED"], swiftSettings: strict),
        // NBD protocol types and codec: no I/O, no engine.
        .target(
            name: "NBD",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // The NBD server: wires the NBD codec to the QED engine over SwiftNIO.
        .target(
            name: "NBDServer",
            dependencies: [
                "QED", "NBD",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "qed-img",
            dependencies: ["QED", "QEDTools", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict,
            // A short-lived command: release builds on Linux link the Swift runtime (and the
            // FoundationEssentials that ArgumentParser uses) statically, so no symbol is bound across
            // shared libraries at start-up (9.3 -> 6.3 ms of CPU; see docs/performance.md).
            linkerSettings: [
                .unsafeFlags(["-static-stdlib"], .when(platforms: [.linux], configuration: .release)),
                .linkedLibrary("_FoundationCShims", .when(platforms: [.linux], configuration: .release)),
                .linkedLibrary("_FoundationCollections", .when(platforms: [.linux], configuration: .release)),
            ]
        ),
        .executableTarget(
            name: "qed-nbd",
            dependencies: [
                "NBD", "NBDServer", "QED",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Helpers every test target shares: a seeded generator, child processes and tool lookup,
        // temporary directories, file bytes, JSON, a retrying open, and waits that cannot race
        // (a qemu-io holder, /proc/locks, inotify opens, a process watch, a narrow pipe).
        .target(name: "TestSupport", dependencies: ["QED"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "QEDTests", dependencies: ["QED", "QEDTools", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "QEDToolsTests", dependencies: ["QEDTools", "QED", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "NBDTests",
            dependencies: [
                "NBD", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The NBD server's connection handler on EmbeddedChannel, its admission and the backend's errors.
        .testTarget(
            name: "NBDServerTests",
            dependencies: [
                "NBDServer", "NBD", "QED", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Golden tests of the qed-img binary against qemu-img's output.
        .testTarget(name: "QEDImgTests", dependencies: ["QED", "TestSupport"], swiftSettings: strict),
        // Tests against the real QEMU tools (qemu-img, qemu-io, qemu-nbd) and NBD clients.
        .testTarget(name: "InteropTests", dependencies: ["QED", "TestSupport"], swiftSettings: strict),
    ]
)
