// perf_harness: a tiny perf-test harness — runs a case several times, reports
// median / MAD / min / max per operation as a table and as JSON.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace machnet::perf {

struct result {
  std::string name;
  std::string unit;  // "ns/op", "us", "%"
  std::vector<double> samples;
  double target = 0;  // an upper bound to compare against, 0 = none

  double median() const { return quantile(0.5); }
  double quantile(double q) const {
    if (samples.empty()) return 0;
    auto s = samples;
    std::sort(s.begin(), s.end());
    double idx = q * double(s.size() - 1);
    auto lo = static_cast<std::size_t>(idx);
    auto hi = std::min(lo + 1, s.size() - 1);
    return s[lo] + (s[hi] - s[lo]) * (idx - double(lo));
  }
  double min() const { return *std::min_element(samples.begin(), samples.end()); }
  double max() const { return *std::max_element(samples.begin(), samples.end()); }
  double mad() const {
    double m = median();
    std::vector<double> d;
    for (double x : samples) d.push_back(std::fabs(x - m));
    std::sort(d.begin(), d.end());
    return d.empty() ? 0 : d[d.size() / 2];
  }
};

class report {
 public:
  void add(result r) { _results.push_back(std::move(r)); }

  void print_table() const {
    fmt::print("{:<44} {:>10} {:>9} {:>10} {:>10} {:>8}  {}\n", "test", "median", "mad", "min",
               "max", "runs", "target");
    for (const auto& r : _results) {
      std::string target =
          r.target > 0 ? fmt::format("<= {} {} {}", r.target, r.unit,
                                     r.median() <= r.target ? "ok" : "MISSED")
                       : "";
      fmt::print("{:<44} {:>10.2f} {:>9.2f} {:>10.2f} {:>10.2f} {:>8}  {} {}\n", r.name,
                 r.median(), r.mad(), r.min(), r.max(), r.samples.size(), r.unit, target);
    }
  }

  std::string json() const {
    std::string out = "{\"results\":[";
    for (std::size_t i = 0; i < _results.size(); ++i) {
      const auto& r = _results[i];
      out += fmt::format(
          "{}{{\"name\":\"{}\",\"unit\":\"{}\",\"median\":{:.3f},\"mad\":{:.3f},\"min\":{:.3f},"
          "\"max\":{:.3f},\"runs\":{},\"target\":{}}}",
          i ? "," : "", r.name, r.unit, r.median(), r.mad(), r.min(), r.max(), r.samples.size(),
          r.target);
    }
    return out + "]}";
  }

  bool write_json(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::string j = json();
    std::fwrite(j.data(), 1, j.size(), f);
    std::fputc('\n', f);
    std::fclose(f);
    return true;
  }

 private:
  std::vector<result> _results;
};

/// Runs `body(iterations)` `runs` times; each sample is elapsed ns / iterations.
template <typename Clock, typename F>
result measure(std::string name, unsigned runs, uint64_t iterations, double target, F&& body) {
  result r{std::move(name), "ns/op", {}, target};
  body(iterations / 10);  // warm-up
  for (unsigned i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    body(iterations);
    auto t1 = Clock::now();
    double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    r.samples.push_back(ns / double(iterations));
  }
  return r;
}

}  // namespace machnet::perf
