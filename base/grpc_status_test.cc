#include "base/grpc_status.h"

#include "gtest/gtest.h"

namespace strata::base {
namespace {

// Every code, both ways: the enums must agree number for number.
TEST(GrpcStatusTest, EveryCodeRoundTrips) {
  const struct {
    absl::StatusCode absl_code;
    grpc::StatusCode grpc_code;
  } kCases[] = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const auto& c : kCases) {
    const grpc::Status g = ToGrpc(absl::Status(c.absl_code, "why"));
    EXPECT_EQ(g.error_code(), c.grpc_code) << absl::StatusCodeToString(c.absl_code);
    EXPECT_EQ(g.error_message(), "why");
    const absl::Status back = FromGrpc(grpc::Status(c.grpc_code, "because"));
    EXPECT_EQ(back.code(), c.absl_code) << absl::StatusCodeToString(c.absl_code);
    EXPECT_EQ(back.message(), "because");
  }
}

TEST(GrpcStatusTest, OkIsOk) {
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpc(grpc::Status::OK).ok());
}

}  // namespace
}  // namespace strata::base
