#include "net/rtnl.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Big enough for one RTM_NEWLINK reply including statistics and VF info. */
#define RTNL_BUF 32768

struct rtnl_req {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
        char attrs[1024];
};

bool rtnl_ifname_valid(const char *name) {
        if (!name || !*name || strlen(name) >= IFNAMSIZ)
                return false;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return false;
        for (const char *p = name; *p; p++)
                if (*p == '/' || *p == ':' || *p == '%' || *p == ' ' ||
                    (unsigned char)*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static int put_attr(struct rtnl_req *req, unsigned short type, const void *data, size_t len) {
        size_t off = NLMSG_ALIGN(req->nh.nlmsg_len);
        size_t need = RTA_SPACE(len);
        if (off + need > sizeof *req)
                return -ENOBUFS;
        struct rtattr *rta = (struct rtattr *)((char *)req + off);
        rta->rta_type = type;
        rta->rta_len = (unsigned short)RTA_LENGTH(len);
        if (len)
                memcpy(RTA_DATA(rta), data, len);
        memset((char *)RTA_DATA(rta) + len, 0, RTA_ALIGN(rta->rta_len) - rta->rta_len);
        req->nh.nlmsg_len = (uint32_t)(off + need);
        return 0;
}

static void init_req(struct rtnl_req *req, uint16_t type, uint16_t flags, int ifindex) {
        memset(req, 0, sizeof *req);
        req->nh.nlmsg_len = NLMSG_LENGTH(sizeof req->ifi);
        req->nh.nlmsg_type = type;
        req->nh.nlmsg_flags = flags;
        req->ifi.ifi_family = AF_UNSPEC;
        req->ifi.ifi_index = ifindex;
}

/* Copies the kernel's extended-ack message of an NLMSG_ERROR, if any. */
static void copy_extack(const struct nlmsghdr *nh, char *why, size_t whylen) {
        if (!why || whylen == 0 || !(nh->nlmsg_flags & NLM_F_ACK_TLVS))
                return;
        const struct nlmsgerr *e = NLMSG_DATA(nh);
        size_t off = NLMSG_LENGTH(sizeof *e);
        if (!(nh->nlmsg_flags & NLM_F_CAPPED))
                off += e->msg.nlmsg_len - NLMSG_HDRLEN;
        if (off >= nh->nlmsg_len)
                return;
        const struct rtattr *rta = (const struct rtattr *)((const char *)nh + NLMSG_ALIGN(off));
        int len = (int)nh->nlmsg_len - (int)NLMSG_ALIGN(off);
        for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
                if (rta->rta_type != NLMSGERR_ATTR_MSG || RTA_PAYLOAD(rta) == 0)
                        continue;
                snprintf(why, whylen, "%.*s", (int)RTA_PAYLOAD(rta), (const char *)RTA_DATA(rta));
                why[strcspn(why, "\n")] = '\0';        /* the message must stay one line */
                return;
        }
}

/* Sends REQ and reads the one answer: an RTM_NEWLINK copied to REPLY
 * (for a GET) or an NLMSG_ERROR acknowledgement. Returns 0 or the
 * negative errno the kernel (or the socket) reported. */
static int transact(struct rtnl_req *req, void *reply, size_t replylen, char *why, size_t whylen) {
        static _Thread_local uint32_t seq;
        union {
                struct nlmsghdr nh;
                char buf[RTNL_BUF];
        } *in = NULL;
        int fd = -1, r;
        int one = 1;

        in = malloc(sizeof *in);
        if (!in)
                return -ENOMEM;

        fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        /* Both are optional refinements (error text, short acks): an old
         * kernel refusing them changes nothing about correctness. */
        (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
        (void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
        /* The kernel answers rtnetlink requests before sendto() returns;
         * the timeout only bounds the wait should that ever change. */
        struct timeval tv = { .tv_sec = 5 };
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
                r = -errno;
                goto fail;
        }

        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        req->nh.nlmsg_seq = ++seq;
        ssize_t n = sendto(fd, req, req->nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
        if (n < 0) {
                r = -errno;
                goto fail;
        }
        if ((size_t)n != req->nh.nlmsg_len) {
                r = -EIO;
                goto fail;
        }

        for (;;) {
                struct sockaddr_nl from;
                struct iovec iov = { .iov_base = in->buf, .iov_len = sizeof in->buf };
                struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1 };
                n = recvmsg(fd, &mh, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = errno == EAGAIN ? -ETIMEDOUT : -errno;
                        goto fail;
                }
                if (mh.msg_flags & MSG_TRUNC) {
                        r = -EMSGSIZE;
                        goto fail;
                }
                if (from.nl_pid != 0)
                        continue;       /* not from the kernel */

                int len = (int)n;
                for (struct nlmsghdr *nh = &in->nh; NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
                        if (nh->nlmsg_seq != req->nh.nlmsg_seq)
                                continue;
                        if (nh->nlmsg_type == NLMSG_ERROR) {
                                if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
                                        r = -EBADMSG;
                                        goto fail;
                                }
                                const struct nlmsgerr *e = NLMSG_DATA(nh);
                                r = e->error;
                                if (r > 0)
                                        r = -r;
                                if (r < 0)
                                        copy_extack(nh, why, whylen);
                                if (r == 0 && reply)
                                        r = -EBADMSG;   /* acked, but no data */
                                goto fail;
                        }
                        if (nh->nlmsg_type == RTM_NEWLINK && reply) {
                                if (nh->nlmsg_len > replylen) {
                                        r = -EMSGSIZE;
                                        goto fail;
                                }
                                memcpy(reply, nh, nh->nlmsg_len);
                                r = 0;
                                goto fail;
                        }
                }
        }

fail:   /* also the success exit: r is 0 there */
        if (fd >= 0)
                close(fd);
        free(in);
        if (r < 0 && why && whylen && !*why)
                snprintf(why, whylen, "%s", strerror(-r));
        return r;
}

static void parse_linkinfo(const struct rtattr *nest, struct rtnl_link *link) {
        int len = (int)RTA_PAYLOAD(nest);
        for (const struct rtattr *rta = RTA_DATA(nest); RTA_OK(rta, len); rta = RTA_NEXT(rta, len))
                if (rta->rta_type == IFLA_INFO_KIND)
                        snprintf(link->kind, sizeof link->kind, "%.*s",
                                 (int)RTA_PAYLOAD(rta), (const char *)RTA_DATA(rta));
}

static uint32_t get_u32(const struct rtattr *rta) {
        uint32_t v = 0;
        if (RTA_PAYLOAD(rta) >= sizeof v)
                memcpy(&v, RTA_DATA(rta), sizeof v);
        return v;
}

int rtnl_link_get(const char *name, struct rtnl_link *ret) {
        struct rtnl_req req;
        struct nlmsghdr *reply = NULL;
        struct rtnl_link link = { 0 };
        int r;

        if (!rtnl_ifname_valid(name))
                return -EINVAL;

        reply = malloc(RTNL_BUF);
        if (!reply)
                return -ENOMEM;

        init_req(&req, RTM_GETLINK, NLM_F_REQUEST, 0);
        r = put_attr(&req, IFLA_IFNAME, name, strlen(name) + 1);
        if (r < 0)
                goto fail;
        r = transact(&req, reply, RTNL_BUF, NULL, 0);
        if (r < 0)
                goto fail;
        if (reply->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) {
                r = -EBADMSG;
                goto fail;
        }

        const struct ifinfomsg *ifi = NLMSG_DATA(reply);
        link.ifindex = ifi->ifi_index;
        link.flags = ifi->ifi_flags;
        int len = (int)IFLA_PAYLOAD(reply);
        for (const struct rtattr *rta = IFLA_RTA(ifi); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
                switch (rta->rta_type) {
                case IFLA_MTU:
                        link.mtu = get_u32(rta);
                        break;
                case IFLA_MASTER:
                        link.master = (int)get_u32(rta);
                        break;
                case IFLA_IFALIAS:
                        snprintf(link.alias, sizeof link.alias, "%.*s",
                                 (int)RTA_PAYLOAD(rta), (const char *)RTA_DATA(rta));
                        break;
                case IFLA_LINKINFO:
                        parse_linkinfo(rta, &link);
                        break;
                default:
                        break;
                }
        }
        if (link.ifindex <= 0) {
                r = -EBADMSG;
                goto fail;
        }
        *ret = link;
        r = 0;
fail:
        free(reply);
        return r;
}

int rtnl_link_change(int ifindex, const struct rtnl_change *change, char *why, size_t whylen) {
        struct rtnl_req req;
        int r;

        if (why && whylen)
                *why = '\0';
        if (ifindex <= 0 || !change)
                return -EINVAL;

        init_req(&req, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
        if (change->up) {
                req.ifi.ifi_flags = IFF_UP;
                req.ifi.ifi_change = IFF_UP;
        }
        if (change->alias) {
                r = put_attr(&req, IFLA_IFALIAS, change->alias, strlen(change->alias));
                if (r < 0)
                        return r;
        }
        if (change->mtu) {
                uint32_t mtu = change->mtu;
                r = put_attr(&req, IFLA_MTU, &mtu, sizeof mtu);
                if (r < 0)
                        return r;
        }
        if (change->master) {
                uint32_t master = (uint32_t)change->master;
                r = put_attr(&req, IFLA_MASTER, &master, sizeof master);
                if (r < 0)
                        return r;
        }
        return transact(&req, NULL, 0, why, whylen);
}
