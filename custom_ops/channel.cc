// tfplace inter-stage channel: a bounded, blocking FIFO of tensor tuples held as a TF resource.
//
// Ops (CPU kernels):
//   TfplaceChannel         -> handle      create or look up (capacity, component types/shapes)
//   TfplaceChannelEnqueue  (handle, components...)   waits while the channel is full
//   TfplaceChannelDequeue  (handle) -> components...  waits while the channel is empty
//   TfplaceChannelClose    (handle, error)           error == "": graceful; else fail everyone
//   TfplaceChannelSize     (handle) -> int32          items queued (not pending enqueues)
//   TfplaceChannelVersion  () -> string               the TF version this library was built for
//   TfplaceYield           ()                         control only; see YieldOp
//
// Why the kernels never block a thread: a pipeline stage's loop runs on the inter-op pool; a
// dequeue that slept on a condition variable would hold one of its (here 2) threads, and the
// producer it waits for might need that very thread.  Enqueue and Dequeue are AsyncOpKernels
// instead: when they cannot finish at once they leave a waiter (their `done` callback) in the
// channel and return.  Whoever changes the channel's state (an enqueue, a dequeue, a close or a
// step cancellation) completes the waiters that can now proceed, after releasing the mutex.
//
//    enqueuers_ (waiting: full)  ->  items_ (<= capacity)  ->  dequeuers_ (waiting: empty)
//
// Closing: Close("") is graceful: later and pending enqueues fail with Cancelled, dequeues drain
// what is queued, then fail with OutOfRange (end of stream, as tf.queue.FIFOQueue does).
// Close("msg") fails every pending and later enqueue and dequeue with Aborted("msg ...") at once
// and drops the queued items.  The first close wins; a second close changes nothing.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/mutex.h"

#ifndef TFPLACE_TF_VERSION
#error "build with -DTFPLACE_TF_VERSION=\"<tf.__version__>\" (make ops does)"
#endif

namespace tfplace {

using tensorflow::AsyncOpKernel;
using tensorflow::CancellationManager;
using tensorflow::CancellationToken;
using tensorflow::DataType;
using tensorflow::DataTypeString;
using tensorflow::DataTypeVector;
using tensorflow::OpInputList;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::PartialTensorShape;
using tensorflow::ResourceBase;
using tensorflow::ResourceHandle;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::mutex;
using tensorflow::mutex_lock;
namespace errors = tensorflow::errors;
namespace shape_inference = tensorflow::shape_inference;

using Status = absl::Status;
using Tuple = std::vector<Tensor>;
using Ready = std::vector<std::function<void()>>;

class Channel : public ResourceBase {
 public:
  using EnqueueDone = std::function<void(const Status&)>;
  using DequeueDone = std::function<void(const Status&, Tuple)>;

  Channel(std::string name, int64_t capacity, DataTypeVector dtypes,
          std::vector<PartialTensorShape> shapes)
      : name_(std::move(name)),
        capacity_(capacity),
        dtypes_(std::move(dtypes)),
        shapes_(std::move(shapes)) {}

  std::string DebugString() const override {
    return absl::StrCat("TfplaceChannel '", name_, "' (capacity ", capacity_, ")");
  }

  // The same shared_name asked for with another spec is a bug, not a second channel.
  Status CheckSpec(int64_t capacity, const DataTypeVector& dtypes,
                   const std::vector<PartialTensorShape>& shapes) const {
    bool same = capacity == capacity_ && dtypes == dtypes_ && shapes.size() == shapes_.size();
    for (size_t i = 0; same && i < shapes.size(); ++i) same = shapes[i].IsIdenticalTo(shapes_[i]);
    if (same) return Status();
    return errors::InvalidArgument(
        "channel '", name_, "' exists with capacity ", capacity_, ", types ",
        tensorflow::DataTypeVectorString(dtypes_), ", shapes ", ShapesString(shapes_),
        " but was asked for with capacity ", capacity, ", types ",
        tensorflow::DataTypeVectorString(dtypes), ", shapes ", ShapesString(shapes),
        "; use another shared_name or the same spec");
  }

  Status CheckTuple(const OpInputList& components) const {
    if (components.size() != static_cast<int>(dtypes_.size())) {
      return errors::InvalidArgument("channel '", name_, "' carries ", dtypes_.size(),
                                     " component(s) but enqueue got ", components.size());
    }
    for (int i = 0; i < components.size(); ++i) {
      const Tensor& t = components[i];
      if (t.dtype() != dtypes_[i]) {
        return errors::InvalidArgument(
            "channel '", name_, "' component ", i, ": expected dtype ",
            DataTypeString(dtypes_[i]), ", got ", DataTypeString(t.dtype()),
            "; cast the tensor or create the channel with that dtype");
      }
      if (i < static_cast<int>(shapes_.size()) && !shapes_[i].IsCompatibleWith(t.shape())) {
        return errors::InvalidArgument(
            "channel '", name_, "' component ", i, ": expected shape ",
            shapes_[i].DebugString(), ", got ", t.shape().DebugString(),
            "; reshape the tensor or create the channel with a compatible shape");
      }
    }
    return Status();
  }

  void Enqueue(Tuple tuple, CancellationManager* cm, EnqueueDone done) {
    Ready ready;
    {
      mutex_lock l(mu_);
      if (closed_) {
        ready.push_back([done, s = EnqueueClosedStatus()] { done(s); });
      } else if (enqueuers_.empty() && static_cast<int64_t>(items_.size()) < capacity_) {
        items_.push_back(std::move(tuple));  // fast path: no waiter, no cancellation callback
        ready.push_back([done] { done(Status()); });
        Pump(&ready);
      } else {
        const int64_t id = next_id_++;
        CancellationToken token = CancellationManager::kInvalidToken;
        if (!Register(cm, id, /*enqueue=*/true, &token)) {
          ready.push_back([done, this] { done(errors::Cancelled("enqueue to ", Name(), " was cancelled")); });
        } else {
          enqueuers_.push_back({id, std::move(tuple), std::move(done), nullptr, cm, token});
        }
      }
    }
    Run(&ready);
  }

  void Dequeue(CancellationManager* cm, DequeueDone done) {
    Ready ready;
    {
      mutex_lock l(mu_);
      if (!items_.empty()) {
        Tuple t = std::move(items_.front());
        items_.pop_front();
        ready.push_back([done, t = std::move(t)]() mutable { done(Status(), std::move(t)); });
        Pump(&ready);  // the freed slot may admit a waiting enqueuer
      } else if (closed_) {
        ready.push_back([done, s = DequeueClosedStatus()] { done(s, Tuple()); });
      } else {
        const int64_t id = next_id_++;
        CancellationToken token = CancellationManager::kInvalidToken;
        if (!Register(cm, id, /*enqueue=*/false, &token)) {
          ready.push_back([done, this] { done(errors::Cancelled("dequeue from ", Name(), " was cancelled"), Tuple()); });
        } else {
          dequeuers_.push_back({id, Tuple(), nullptr, std::move(done), cm, token});
        }
      }
    }
    Run(&ready);
  }

  void Close(const std::string& error) {
    Ready ready;
    {
      mutex_lock l(mu_);
      if (closed_) return;
      closed_ = true;
      if (!error.empty()) {
        error_ = errors::Aborted(error, " [", Name(), " was closed with this error]");
        items_.clear();
      }
      for (Waiter& w : enqueuers_) Finish(&w, EnqueueClosedStatus(), &ready);
      enqueuers_.clear();
      if (items_.empty()) {  // otherwise no dequeuer waits: Pump served them
        for (Waiter& w : dequeuers_) Finish(&w, DequeueClosedStatus(), &ready);
        dequeuers_.clear();
      }
    }
    Run(&ready);
  }

  int64_t Size() {
    mutex_lock l(mu_);
    return static_cast<int64_t>(items_.size());
  }

 private:
  struct Waiter {
    int64_t id;
    Tuple tuple;               // enqueuers: what they want to put
    EnqueueDone enqueue_done;  // exactly one of the two callbacks is set
    DequeueDone dequeue_done;
    CancellationManager* cm;
    CancellationToken token;
  };

  std::string Name() const { return absl::StrCat("channel '", name_, "'"); }

  Status EnqueueClosedStatus() const TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!error_.ok()) return error_;
    return errors::Cancelled(Name(), " is closed; no more enqueues");
  }

  Status DequeueClosedStatus() const TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!error_.ok()) return error_;
    return errors::OutOfRange(Name(), " is closed and empty (end of stream)");
  }

  static std::string ShapesString(const std::vector<PartialTensorShape>& shapes) {
    std::string s = "[";
    for (size_t i = 0; i < shapes.size(); ++i) {
      absl::StrAppend(&s, i ? ", " : "", shapes[i].DebugString());
    }
    return s + "]";
  }

  // A step cancellation (e.g. another op of the step failed) must not leave a waiter behind.
  // The callback holds a ref on the channel; exactly one of "callback runs" and
  // "TryDeregisterCallback succeeds" happens, and each drops that ref.
  bool Register(CancellationManager* cm, int64_t id, bool enqueue, CancellationToken* token)
      TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cm == nullptr) return true;
    *token = cm->get_cancellation_token();
    Ref();
    bool ok = cm->RegisterCallback(*token, [this, id, enqueue] {
      Cancel(id, enqueue);
      Unref();
    });
    if (!ok) {
      *token = CancellationManager::kInvalidToken;
      // Unref cannot delete us here: the kernel calling in holds a ref too.
      Unref();
    }
    return ok;
  }

  void Cancel(int64_t id, bool enqueue) {
    Ready ready;
    {
      mutex_lock l(mu_);
      std::deque<Waiter>& list = enqueue ? enqueuers_ : dequeuers_;
      for (auto it = list.begin(); it != list.end(); ++it) {
        if (it->id != id) continue;
        Waiter w = std::move(*it);
        list.erase(it);
        w.cm = nullptr;  // the callback is running: nothing to deregister
        Finish(&w, errors::Cancelled(enqueue ? "enqueue to " : "dequeue from ", Name(),
                                     " was cancelled"),
               &ready);
        break;
      }
    }
    Run(&ready);
  }

  // Queues the completion of `w` (run outside the mutex, by Run).
  void Finish(Waiter* w, const Status& s, Ready* ready) TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    CancellationManager* cm = w->cm;
    CancellationToken token = w->token;
    auto deregister = [this, cm, token] {
      if (cm != nullptr && token != CancellationManager::kInvalidToken &&
          cm->TryDeregisterCallback(token)) {
        Unref();  // the callback will never run; its ref is ours to drop (the caller holds one)
      }
    };
    if (w->enqueue_done) {
      ready->push_back([deregister, s, done = std::move(w->enqueue_done)] {
        deregister();
        done(s);
      });
    } else {
      ready->push_back([deregister, s, done = std::move(w->dequeue_done),
                        t = std::move(w->tuple)]() mutable {
        deregister();
        done(s, std::move(t));
      });
    }
  }

  // Moves items from waiting enqueuers to waiting dequeuers as far as capacity allows.  Serving
  // dequeuers first keeps FIFO order: queued items are older than any waiting enqueuer's.
  void Pump(Ready* ready) TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (bool progress = true; progress;) {
      progress = false;
      while (!dequeuers_.empty() && !items_.empty()) {
        Waiter w = std::move(dequeuers_.front());
        dequeuers_.pop_front();
        w.tuple = std::move(items_.front());
        items_.pop_front();
        Finish(&w, Status(), ready);
        progress = true;
      }
      while (!enqueuers_.empty() && static_cast<int64_t>(items_.size()) < capacity_) {
        Waiter w = std::move(enqueuers_.front());
        enqueuers_.pop_front();
        items_.push_back(std::move(w.tuple));
        w.tuple.clear();
        Finish(&w, Status(), ready);
        progress = true;
      }
    }
  }

  // Completions run without the mutex: a `done` may start other kernels on this channel.
  static void Run(Ready* ready) {
    for (auto& f : *ready) f();
  }

  const std::string name_;
  const int64_t capacity_;
  const DataTypeVector dtypes_;
  const std::vector<PartialTensorShape> shapes_;

  mutex mu_;
  std::deque<Tuple> items_ TF_GUARDED_BY(mu_);
  std::deque<Waiter> enqueuers_ TF_GUARDED_BY(mu_);
  std::deque<Waiter> dequeuers_ TF_GUARDED_BY(mu_);
  bool closed_ TF_GUARDED_BY(mu_) = false;
  Status error_ TF_GUARDED_BY(mu_);
  int64_t next_id_ TF_GUARDED_BY(mu_) = 0;
};

// ---------------------------------------------------------------------------------------- ops

REGISTER_OP("TfplaceChannel")
    .Output("handle: resource")
    .Attr("capacity: int >= 1")
    .Attr("component_types: list(type) >= 1")
    .Attr("shapes: list(shape) >= 0 = []")
    .Attr("container: string = ''")
    .Attr("shared_name: string = ''")
    .SetIsStateful()
    .SetShapeFn(shape_inference::ScalarShape)
    .Doc("Creates (or finds, by container/shared_name) a bounded blocking channel.");

REGISTER_OP("TfplaceChannelEnqueue")
    .Input("handle: resource")
    .Input("components: Tcomponents")
    .Attr("Tcomponents: list(type) >= 1")
    .SetIsStateful()
    .SetShapeFn(shape_inference::NoOutputs)
    .Doc("Appends one tuple; waits (without holding a thread) while the channel is full.");

REGISTER_OP("TfplaceChannelDequeue")
    .Input("handle: resource")
    .Output("components: component_types")
    .Attr("component_types: list(type) >= 1")
    .Attr("shapes: list(shape) >= 0 = []")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      std::vector<PartialTensorShape> shapes;
      TF_RETURN_IF_ERROR(c->GetAttr("shapes", &shapes));
      for (int i = 0; i < c->num_outputs(); ++i) {
        if (shapes.empty()) {
          c->set_output(i, c->UnknownShape());
        } else {
          shape_inference::ShapeHandle h;
          TF_RETURN_IF_ERROR(c->MakeShapeFromPartialTensorShape(shapes[i], &h));
          c->set_output(i, h);
        }
      }
      return Status();
    })
    .Doc("Removes the oldest tuple; waits (without holding a thread) while the channel is empty.");

REGISTER_OP("TfplaceChannelClose")
    .Input("handle: resource")
    .Input("error: string")
    .SetIsStateful()
    .SetShapeFn(shape_inference::NoOutputs)
    .Doc("Closes the channel; a non-empty error fails every waiter and later op with it.");

REGISTER_OP("TfplaceChannelSize")
    .Input("handle: resource")
    .Output("size: int32")
    .SetIsStateful()
    .SetShapeFn(shape_inference::ScalarShape);

REGISTER_OP("TfplaceYield")
    .SetShapeFn(shape_inference::NoOutputs)
    .Doc("Finishes at once, but reports it from a thread outside the executor's pool: what "
         "waits for it is queued behind the ops that were ready when it ran. Not stateful: "
         "tf.function's automatic control dependencies would chain it with every other "
         "stateful op in import order, across stages.");

REGISTER_OP("TfplaceChannelVersion")
    .Output("version: string")
    .SetShapeFn(shape_inference::ScalarShape)
    .Doc("The TensorFlow version this library was compiled against.");

// ------------------------------------------------------------------------------------ kernels

class ChannelOp : public OpKernel {
 public:
  explicit ChannelOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("capacity", &capacity_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("component_types", &dtypes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shapes", &shapes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("container", &container_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shared_name", &name_));
    OP_REQUIRES(ctx, shapes_.empty() || shapes_.size() == dtypes_.size(),
                errors::InvalidArgument("shapes has ", shapes_.size(),
                                        " entries but component_types has ", dtypes_.size(),
                                        "; give one shape per component or none"));
    // Unnamed: one channel per kernel instance, as FIFOQueue does (a function traced anew
    // gets new kernels, so new, empty channels: how the executor recovers from a failed step).
    static std::atomic<int64_t> instances{0};
    if (name_.empty()) {
      name_ = absl::StrCat("_tfplace_channel_", instances.fetch_add(1), "_", name());
    }
  }

  void Compute(OpKernelContext* ctx) override {
    auto create = [this](Channel** out) {
      *out = new Channel(name_, capacity_, dtypes_, shapes_);
      return Status();
    };
    ResourceHandle handle = tensorflow::MakeResourceHandle<Channel>(ctx, container_, name_);
    tensorflow::core::RefCountPtr<Channel> ch;
    OP_REQUIRES_OK(ctx, tensorflow::LookupOrCreateResource<Channel>(ctx, handle, &ch, create));
    OP_REQUIRES_OK(ctx, ch->CheckSpec(capacity_, dtypes_, shapes_));
    Tensor* out = nullptr;
    tensorflow::AllocatorAttributes host;
    host.set_on_host(true);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out, host));
    out->scalar<ResourceHandle>()() = handle;
  }

 private:
  int64_t capacity_ = 0;
  DataTypeVector dtypes_;
  std::vector<PartialTensorShape> shapes_;
  std::string container_;
  std::string name_;
};

class EnqueueOp : public AsyncOpKernel {
 public:
  explicit EnqueueOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {}

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    tensorflow::core::RefCountPtr<Channel> ch;
    OP_REQUIRES_OK_ASYNC(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), &ch), done);
    OpInputList components;
    OP_REQUIRES_OK_ASYNC(ctx, ctx->input_list("components", &components), done);
    OP_REQUIRES_OK_ASYNC(ctx, ch->CheckTuple(components), done);
    Tuple tuple(components.begin(), components.end());
    ch->Enqueue(std::move(tuple), ctx->cancellation_manager(),
                [ctx, done](const Status& s) {
                  ctx->SetStatus(s);
                  done();
                });
  }
};

class DequeueOp : public AsyncOpKernel {
 public:
  explicit DequeueOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {}

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    tensorflow::core::RefCountPtr<Channel> ch;
    OP_REQUIRES_OK_ASYNC(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), &ch), done);
    ch->Dequeue(ctx->cancellation_manager(), [ctx, done](const Status& s, Tuple t) {
      if (s.ok()) {
        for (size_t i = 0; i < t.size(); ++i) ctx->set_output(static_cast<int>(i), t[i]);
      } else {
        ctx->SetStatus(s);
      }
      done();
    });
  }
};

class CloseOp : public OpKernel {
 public:
  explicit CloseOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<Channel> ch;
    OP_REQUIRES_OK(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), &ch));
    const Tensor& error = ctx->input(1);
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(error.shape()),
                errors::InvalidArgument("error must be a scalar string, got shape ",
                                        error.shape().DebugString()));
    ch->Close(std::string(error.scalar<tensorflow::tstring>()()));
  }
};

class SizeOp : public OpKernel {
 public:
  explicit SizeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<Channel> ch;
    OP_REQUIRES_OK(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), &ch));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int32_t>()() = static_cast<int32_t>(ch->Size());
  }
};

// TfplaceYield: a control-only op for the pipeline rewrite. A pinned worker runs a step's
// kernels on one inter-op thread. When an op finishes, TF's executor runs its cheap ready
// successors inline on that thread, and it also runs the last expensive one inline if nothing
// cheap is ready; it queues the other expensive ones at the front of the thread's own queue.
// A forward segment's done NoOp (cheap) thus used to run right after the activation it
// sends, and it started the next micro-batch's MatMuls inline, while the activation's _Send
// waited in the queue for the whole chain. The rewrite makes the done NoOp also wait for a
// yield that follows the activation. This op is async (the executor always counts async ops as
// expensive, so no cheap successor is ready when the activation finishes), and it completes
// from a thread of its own. The done NoOp is then queued at the back of the executor's queue,
// behind the _Send.
class Deferrer {
 public:
  static Deferrer& Get() {
    static Deferrer* d = new Deferrer();  // never destroyed: its thread may outlive main()
    return *d;
  }
  void Run(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      work_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  Deferrer() {
    std::thread([this] {
      for (;;) {
        std::function<void()> fn;
        {
          std::unique_lock<std::mutex> l(mu_);
          cv_.wait(l, [this] { return !work_.empty(); });
          fn = std::move(work_.front());
          work_.pop_front();
        }
        fn();
      }
    }).detach();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> work_;
};

class YieldOp : public AsyncOpKernel {
 public:
  explicit YieldOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {}

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    Deferrer::Get().Run(std::move(done));
  }
};

class VersionOp : public OpKernel {
 public:
  explicit VersionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<tensorflow::tstring>()() = TFPLACE_TF_VERSION;
  }
};

REGISTER_KERNEL_BUILDER(Name("TfplaceChannel").Device(tensorflow::DEVICE_CPU), ChannelOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceChannelEnqueue").Device(tensorflow::DEVICE_CPU), EnqueueOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceChannelDequeue").Device(tensorflow::DEVICE_CPU), DequeueOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceChannelClose").Device(tensorflow::DEVICE_CPU), CloseOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceChannelSize").Device(tensorflow::DEVICE_CPU), SizeOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceYield").Device(tensorflow::DEVICE_CPU), YieldOp);
REGISTER_KERNEL_BUILDER(Name("TfplaceChannelVersion").Device(tensorflow::DEVICE_CPU), VersionOp);

}  // namespace tfplace

// Also as a plain symbol, readable without running an op (e.g. via ctypes).
extern "C" const char* tfplace_channel_tf_version() { return TFPLACE_TF_VERSION; }
