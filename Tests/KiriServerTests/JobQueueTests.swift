import Foundation
@testable import KiriServer
import XCTest

/// The queue alone, with jobs that only make their folder.
final class JobQueueTests: XCTestCase {
    /// The queue remembers its last `history` jobs; a forgotten job's folder is deleted with it.
    func testForgottenJobsTakeTheirFoldersWithThem() async throws {
        let root = NSTemporaryDirectory() + "kiri-queue-test-\(JobQueue.newID())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let queue = JobQueue(capacity: 10, history: 2) { job in
            try? FileManager.default.createDirectory(atPath: job.folder, withIntermediateDirectories: true)
            return nil
        }
        var jobs: [Job] = []
        for _ in 0..<5 {
            let job = try queue.submit { id in Job(id: id, spec: JobSpec(recipe: "x.lua", source: "", runs: [[]]), folder: root + "/" + id) }
            await job.finished()
            jobs.append(job)
        }
        await queue.shutdown()
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: root)), Set(jobs.suffix(2).map(\.id)))
        XCTAssertNil(queue.job(jobs[0].id))
        XCTAssertNotNil(queue.job(jobs[4].id))
    }
}
