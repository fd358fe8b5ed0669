/// getopt(3) as glibc does it, for qemu-io's command line and its commands: options may come
/// before or after the operands (glibc permutes), `--` ends the options, clustered flags (`-qv`)
/// and attached values (`-P0xa`, `--cache=none`) work.
struct GetOpt {
    /// One option found: its short letter (or long name) and its value when it takes one.
    struct Option: Equatable {
        var name: String
        var value: String?
    }

    /// Why parsing stopped, in glibc's words (printed after the program or command name).
    enum Failure: Error, Equatable {
        case invalid(String)
        case missingValue(String)
        case unrecognized(String)

        /// glibc's message, e.g. `invalid option -- 'x'`.
        var message: String {
            switch self {
            case .invalid(let c): return "invalid option -- '\(c)'"
            case .missingValue(let c): return "option requires an argument -- '\(c)'"
            case .unrecognized(let s): return "unrecognized option '\(s)'"
            }
        }
    }

    /// Short options in getopt's notation ("P:qv": P takes a value).
    let shortSpec: String
    /// Long options: name → (the short letter it stands for, whether it takes a value).
    var long: [String: (short: String, takesValue: Bool)] = [:]

    private func takesValue(_ c: Character) -> Bool? {
        guard c != ":", let i = shortSpec.firstIndex(of: c) else { return nil }
        let next = shortSpec.index(after: i)
        return next < shortSpec.endIndex && shortSpec[next] == ":"
    }

    /// Splits `args` (without the program or command name) into options and operands.
    func parse(_ args: [String]) -> Result<(options: [Option], operands: [String]), Failure> {
        var options: [Option] = []
        var operands: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            if arg == "--" {
                operands += args[i...]
                break
            }
            if arg.hasPrefix("--") && !long.isEmpty {
                let body = arg.dropFirst(2)
                let name = String(body.prefix(while: { $0 != "=" }))
                let attached = body.contains("=") ? String(body.drop(while: { $0 != "=" }).dropFirst()) : nil
                guard let spec = long[name] else { return .failure(.unrecognized(arg)) }
                if spec.takesValue {
                    if let attached {
                        options.append(Option(name: spec.short, value: attached))
                    } else if i < args.count {
                        options.append(Option(name: spec.short, value: args[i]))
                        i += 1
                    } else {
                        return .failure(.missingValue(name))
                    }
                } else {
                    options.append(Option(name: spec.short, value: nil))
                }
                continue
            }
            guard arg.hasPrefix("-"), arg.count > 1 else {
                operands.append(arg)
                continue
            }
            var rest = Substring(arg.dropFirst())
            while let c = rest.first {
                rest = rest.dropFirst()
                guard let needsValue = takesValue(c) else { return .failure(.invalid(String(c))) }
                if !needsValue {
                    options.append(Option(name: String(c), value: nil))
                    continue
                }
                if !rest.isEmpty {
                    options.append(Option(name: String(c), value: String(rest)))
                } else if i < args.count {
                    options.append(Option(name: String(c), value: args[i]))
                    i += 1
                } else {
                    return .failure(.missingValue(String(c)))
                }
                break
            }
        }
        return .success((options, operands))
    }
}
